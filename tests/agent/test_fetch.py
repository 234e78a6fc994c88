"""Artifact fetching into the agent's cache: plain path, file://, http://, and clear errors."""

import sys

import pytest

from runtime.agent.fetch import FetchError, cache_folder, fetch
from runtime.procs import Service, free_port, tcp_open, wait_until
from runtime.specs.fetch import FetchRules

LOOPBACK_ALLOWED = FetchRules(allowedNetworks=["127.0.0.0/8"])


@pytest.fixture
def artifact(tmp_path):
    folder = tmp_path / "artifact"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.joblib").write_bytes(b"weights")
    (folder / "sub" / "extra.txt").write_text("more")
    return folder


def files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


EXPECTED = {"model.joblib": b"weights", "sub/extra.txt": b"more"}


def test_plain_path_and_file_uri(artifact, tmp_path):
    cache = tmp_path / "cache"
    assert files(fetch(str(artifact), cache)) == EXPECTED
    assert files(fetch(f"file://{artifact}/", cache)) == EXPECTED
    single = fetch(str(artifact / "model.joblib"), cache)
    assert files(single) == {"model.joblib": b"weights"}


def test_cache_is_reused_per_uri_and_artifact_version(artifact, tmp_path):
    cache = tmp_path / "cache"
    first = fetch(str(artifact), cache, artifact_version=1)
    (artifact / "model.joblib").write_bytes(b"retrained")
    assert fetch(str(artifact), cache, artifact_version=1) == first
    assert files(first)["model.joblib"] == b"weights"
    second = fetch(str(artifact), cache, artifact_version=2)
    assert second != first and files(second)["model.joblib"] == b"retrained"
    assert second == cache_folder(cache, str(artifact), 2)


def test_http_folder_and_file(artifact, tmp_path):
    port = free_port()
    server = Service("http", [sys.executable, "-m", "http.server", str(port), "--bind",
                              "127.0.0.1", "--directory", str(artifact.parent)],
                     tmp_path / "logs").start()
    try:
        wait_until(lambda: tcp_open(port), 15, "http.server", server)
        base = f"http://127.0.0.1:{port}/artifact"
        cache, rules = tmp_path / "cache", LOOPBACK_ALLOWED
        assert files(fetch(base, cache, rules=rules)) == EXPECTED
        assert files(fetch(f"{base}/sub/extra.txt", cache, rules=rules)) == {
            "extra.txt": b"more"}
        with pytest.raises(FetchError, match="nothing found"):
            fetch(f"http://127.0.0.1:{port}/missing", cache, rules=rules)
    finally:
        server.stop()


@pytest.mark.parametrize("uri, says", [
    ("foo://bucket/model", r"^spec\.storageUri: .*unsupported scheme 'foo'"),
    ("ftp://127.0.0.1/model", r"scheme 'ftp' is not allowed on this server"),
    ("s3://bucket/model", r"install core2\[s3\]"),
    ("gs://bucket/model", r"install core2\[gcs\]"),
])
def test_unusable_scheme_is_a_clear_error(uri, says, tmp_path):
    with pytest.raises(FetchError, match=says):
        fetch(uri, tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*"))


def test_allowed_scheme_without_a_backend_is_a_clear_error(tmp_path):
    rules = FetchRules(allowedSchemes=["foo"])
    with pytest.raises(FetchError, match="unsupported scheme 'foo'"):
        fetch("foo://bucket/model", tmp_path / "cache", rules=rules)


def test_missing_path_and_empty_folder(tmp_path):
    with pytest.raises(FetchError, match="nothing found"):
        fetch(str(tmp_path / "absent"), tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FetchError, match="empty"):
        fetch(str(tmp_path / "empty"), tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []  # nothing half-written is kept
