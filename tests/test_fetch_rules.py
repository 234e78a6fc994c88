"""Safe artifact fetching: each storageUri attack is refused before anything is copied or any
refused address is reached, the refusal names the field and the rule, a size cap holds even
when the server hides the size, and deleting a model stops its fetch."""

import json
import sys
import threading
import time
from pathlib import Path

import pytest

from runtime.agent.fetch import FetchCancelled, FetchError, fetch
from runtime.local.config import LocalServer
from runtime.procs import Service, free_port, tcp_open, wait_until
from runtime.specs.fetch import FetchRules
from tests.test_cli import core2

# A small HTTP server: /redirect?to=URL answers 302; /stream?n=BYTES&delay=S sends BYTES
# (forever if 0) in 64 KiB chunks without a Content-Length; every request is logged.
SERVER = r"""
import sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, parse_qs

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        print("GET", self.path, flush=True)
        url = urlsplit(self.path); q = parse_qs(url.query)
        if url.path == "/redirect":
            self.send_response(302); self.send_header("Location", q["to"][0])
            self.send_header("Content-Length", "0"); self.end_headers(); return
        if url.path == "/stream":
            n, delay = int(q["n"][0]), float(q.get("delay", ["0"])[0])
            self.send_response(200); self.send_header("Transfer-Encoding", "chunked")
            self.end_headers(); sent = 0
            try:
                while n == 0 or sent < n:
                    chunk = b"x" * 65536 if n == 0 else b"x" * min(65536, n - sent)
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk)); self.wfile.flush()
                    sent += len(chunk); time.sleep(delay)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                print("client went away after", sent, flush=True)
            return
        self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers()
    def do_HEAD(self):
        print("HEAD", self.path, flush=True)
        self.send_response(405); self.send_header("Content-Length", "0"); self.end_headers()

ThreadingHTTPServer((sys.argv[1], int(sys.argv[2])), H).serve_forever()
"""


class HttpServer:
    def __init__(self, tmp_path: Path, host: str = "127.0.0.1"):
        self.host, self.port = host, free_port()
        self.svc = Service(f"http-{host}-{self.port}", [sys.executable, "-c", SERVER, host,
                                                        str(self.port)], tmp_path / "logs")

    def __enter__(self) -> "HttpServer":
        self.svc.start()
        wait_until(lambda: tcp_open(self.port, self.host), 15, "the test HTTP server", self.svc)
        return self

    def __exit__(self, *_):
        self.svc.stop()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def requests(self) -> list[str]:
        return [line for line in self.svc.tail(1000).splitlines() if line.startswith(("GET",
                                                                                      "HEAD"))]


def _nothing_copied(cache: Path) -> bool:
    return not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


@pytest.fixture
def root(tmp_path) -> Path:
    folder = tmp_path / "models"
    (folder / "iris").mkdir(parents=True)
    (folder / "iris" / "model.joblib").write_bytes(b"w" * 5000)
    return folder


@pytest.mark.parametrize("uri", ["/etc/shadow", "file:///root/", "/etc", "file://host/etc/x"])
def test_local_paths_outside_the_roots_are_refused(uri, root, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"^spec\.storageUri: .*(outside the folders this "
                                         r"server may read \(fetch\.localRoots|names no host)"):
        fetch(uri, cache, rules=FetchRules(localRoots=[root]))
    assert _nothing_copied(cache)
    assert fetch(str(root / "iris"), cache, rules=FetchRules(localRoots=[root])).is_dir()


def test_a_symbolic_link_out_of_a_root_is_refused(root, tmp_path):
    (root / "iris" / "secret").symlink_to("/etc/hostname")
    (root / "escape").symlink_to("/etc")
    cache = tmp_path / "cache"
    rules = FetchRules(localRoots=[root])
    for uri in (str(root / "iris"), str(root / "escape")):
        with pytest.raises(FetchError, match="outside the folders this server may read"):
            fetch(uri, cache, rules=rules)
    assert _nothing_copied(cache)


def test_schemes_are_allowed_per_server(root, tmp_path):
    with pytest.raises(FetchError, match=r"scheme 'file' is not allowed on this server "
                                         r"\(fetch\.allowedSchemes: s3\)"):
        fetch(str(root / "iris"), tmp_path / "cache", rules=FetchRules(allowedSchemes=["s3"]))


@pytest.mark.parametrize("uri, rule", [
    ("http://169.254.169.254/latest/meta-data/iam/", "a cloud metadata address"),
    ("http://[fd00:ec2::254]/latest/", "a cloud metadata address"),
    ("http://169.254.10.1/x", "a link-local address"),
    ("http://0.0.0.0:80/x", "not a unicast address"),
    ("http://[::1]:80/x", "a loopback address"),
])
def test_forbidden_addresses_are_refused_before_any_connection(uri, rule, tmp_path):
    started = time.monotonic()
    with pytest.raises(FetchError, match=rf"^spec\.storageUri: .* is .*, {rule}, which this "
                                         r"server may not fetch from \(fetch\.allowedNetworks\)"):
        fetch(uri, tmp_path / "cache")
    assert time.monotonic() - started < 2  # refused up front, not after a connect timeout
    assert _nothing_copied(tmp_path / "cache")


def test_loopback_by_address_or_name_is_refused_and_never_reached(tmp_path):
    with HttpServer(tmp_path) as server:
        for uri in (f"{server.url}/stream?n=10", f"http://localhost:{server.port}/stream?n=10"):
            with pytest.raises(FetchError, match="a loopback address"):
                fetch(uri, tmp_path / "cache")
        assert server.requests() == []
        # allowed explicitly, the same URI is fetched
        got = fetch(f"{server.url}/stream?n=10", tmp_path / "cache",
                    rules=FetchRules(allowedNetworks=["127.0.0.1/32"]))
        assert [p.read_bytes() for p in got.iterdir()] == [b"x" * 10]


def test_a_redirect_to_a_refused_address_is_not_followed(tmp_path):
    # 127.0.0.2 stands for an allowed outside server; 127.0.0.1 for an internal one.
    with HttpServer(tmp_path, "127.0.0.2") as outside, HttpServer(tmp_path) as inside:
        rules = FetchRules(allowedNetworks=["127.0.0.2/32"])
        uri = f"{outside.url}/redirect?to={inside.url}/stream%3Fn%3D10"
        with pytest.raises(FetchError, match="a loopback address"):
            fetch(uri, tmp_path / "cache", rules=rules)
        assert inside.requests() == [] and outside.requests()
    assert _nothing_copied(tmp_path / "cache")


def test_size_cap_known_and_hidden_sizes(root, tmp_path):
    cache = tmp_path / "cache"
    with pytest.raises(FetchError, match=r"larger than this server's fetch\.maxBytes "
                                         r"\(1000 bytes\)"):
        fetch(str(root / "iris"), cache, rules=FetchRules(maxBytes=1000))
    assert _nothing_copied(cache)
    with HttpServer(tmp_path) as server:  # chunked: no size known before reading
        rules = FetchRules(allowedNetworks=["127.0.0.1/32"], maxBytes="1Mi")
        with pytest.raises(FetchError, match=r"fetch\.maxBytes \(1048576 bytes\)"):
            fetch(f"{server.url}/stream?n=0", cache, rules=rules)
    assert _nothing_copied(cache)


def test_a_cancelled_fetch_stops_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    cancel = threading.Event()
    errors: list[BaseException] = []

    def run():
        try:
            fetch(f"http://127.0.0.1:{server.port}/stream?n=0&delay=0.05", cache,
                  rules=FetchRules(allowedNetworks=["127.0.0.1/32"]), cancel=cancel)
        except BaseException as e:
            errors.append(e)

    with HttpServer(tmp_path) as server:
        worker = threading.Thread(target=run)
        worker.start()
        wait_until(lambda: server.requests(), 15, "the download to start")
        time.sleep(0.5)  # let bytes flow: the cancel must stop a fetch that is reading
        assert worker.is_alive()
        cancel.set()
        worker.join(5)
        assert not worker.is_alive(), "the fetch kept copying after it was cancelled"
    assert len(errors) == 1 and isinstance(errors[0], FetchCancelled)
    assert not any(cache.iterdir())


# ---- on a real platform -------------------------------------------------------------------
def _failed(env, name: str):
    def check():
        [s] = env.scheduler.status("Model", name)
        return s if s.state in ("ModelFailed", "ScheduleFailed") else None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if s := check():
            return s
        time.sleep(0.2)
    raise AssertionError(f"{name} did not fail")


def test_platform_refuses_attacks_with_the_reason_in_model_status(make_env):
    env = make_env()
    cache = env.platform.run_dir / "servers" / "mlserver-0" / "cache"
    attacks = {"shadow": ("/etc/shadow", "outside the folders this server may read"),
               "root": ("file:///root/", "outside the folders this server may read"),
               "internal": (f"http://127.0.0.1:{env.platform.ports['schedulerApi']}/x",
                            "a loopback address"),
               "metadata": ("http://169.254.169.254/latest/meta-data/", "cloud metadata")}
    for name, (uri, _) in attacks.items():
        env.load_model(name, uri, wait=False)
    for name, (_, rule) in attacks.items():
        status = _failed(env, name)
        assert "spec.storageUri" in status.reason and rule in status.reason, status.reason
        shown = core2(env.platform.run_dir, "model", "status", name, timeout=30)
        assert rule in json.loads(shown.stdout)["versions"][0]["state"]["reason"]
    assert _nothing_copied(cache)


def test_deleting_a_model_stops_its_fetch(make_env, tmp_path):
    with HttpServer(tmp_path) as server:
        env = make_env([LocalServer(name="mlserver", fetch=FetchRules(
            localRoots=[], allowedNetworks=["127.0.0.1/32"]))])
        cache = env.platform.run_dir / "servers" / "mlserver-0" / "cache"
        env.load_model("endless", f"{server.url}/stream?n=0&delay=0.01", wait=False)
        wait_until(lambda: server.requests(), 60, "the fetch to start")
        time.sleep(1)  # bytes flowing
        [status] = env.scheduler.status("Model", "endless")
        assert status.state == "ModelProgressing"
        env.scheduler.delete("Model", "endless")
        env.scheduler.wait("Model", "endless", until="gone", timeout=30)
        wait_until(lambda: not any(cache.iterdir()), 10, "the staging folder to go")
        wait_until(lambda: "client went away" in server.svc.tail(50), 10,
                   "the download to stop")
