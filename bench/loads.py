"""The model-load path at scale: N real scikit-learn models loaded one after another (as the
agent does) into one MLServer, while a client keeps calling the first model. Load paths side by
side in one run:

- `stock`: MLServer's scan of every model-settings.json per load, load on the serving loop;
- `scan+thread`, `named+loop`: one half of the change each;
- `flat-5ms`: flat, with Python's default switch interval while a model loads;
- `flat` (core2's default): find by folder name, load on the loader thread.

    .venv/bin/python bench/loads.py [--models 1000] [--modes stock,flat] [--budget 240] \
        [--platform]

Prints per mode: loading time until all N are loaded (or how many made it within --budget
seconds of loading), load time for the first and last 50 models, and inference p50 idle vs
during the loads: after every 2 s of loads, 0.5 s without, so idle and busy are sampled
alternately on the same (shared) machine; the pauses are not counted as loading time.
"""

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.agent import modelsettings
from runtime.client import SchedulerClient
from runtime.local.config import LocalConfig, Ports
from runtime.local.platform import Platform
from runtime.procs import Service, free_port, http_ok, python_module, wait_until
from runtime.specs.model import ModelSpec

ROOT = Path(__file__).resolve().parents[1]
WINDOW, PAUSE = 2.0, 0.5  # seconds of loading, then of idle sampling
IRIS = ROOT / "samples" / "models" / "iris"
PROBE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                     "data": [6.0, 2.2, 5.0, 1.5]}]}
MODES = {"stock": ["--repository-scan", "--load-on-loop"], "scan+thread": ["--repository-scan"],
         "named+loop": ["--load-on-loop"], "flat-5ms": ["--load-switch-interval", "0.005"],
         "flat": []}


class Prober(threading.Thread):
    """Sequential REST inference on one model; latencies (ms) go to whichever list is set."""

    def __init__(self, url: str, headers: dict[str, str] | None = None):
        super().__init__(daemon=True)
        self.url, self.headers = url, headers or {}
        self.sink: list[float] | None = None
        self.stop = threading.Event()
        self.failures = 0

    def run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self.stop.is_set():
                sink = self.sink
                start = time.perf_counter()
                ok = client.post(self.url, json=PROBE, headers=self.headers).status_code == 200
                if sink is not None:
                    sink.append((time.perf_counter() - start) * 1000)
                    self.failures += not ok
                if sink is None:
                    time.sleep(0.01)

    def sample(self, seconds: float) -> list[float]:
        self.sink = out = []
        time.sleep(seconds)
        self.sink = None
        return out


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def run_mode(mode: str, models: int, budget: float, workdir: Path) -> dict:
    repository = workdir / mode / "repository"
    spec = ModelSpec.parse({"storageUri": str(IRIS), "requirements": ["sklearn"]}, where="spec")
    names = [f"model{i:04d}_1" for i in range(models)]
    http = free_port()
    server = Service(f"mlserver-{mode}", python_module(
        "runtime.agent.modelserver", "--repository", str(repository), "--http-port", str(http),
        "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), *MODES[mode]),
        workdir / "logs", cwd=str(ROOT)).start()
    url = f"http://127.0.0.1:{http}"
    try:
        wait_until(lambda: http_ok(f"{url}/v2/health/ready"), 60, "MLServer ready", server)
        load_ms: list[float] = []
        with httpx.Client(timeout=600) as client:
            def load(name: str) -> None:
                start = time.perf_counter()
                # As the agent: the model's folder (links to the cached artifact and its
                # model-settings.json) is written just before its load.
                modelsettings.write_model(repository, name, spec, IRIS,
                                          {"name": name, "version": 1, "memory": 0})
                r = client.post(f"{url}/v2/repository/models/{name}/load")
                r.raise_for_status()
                load_ms.append((time.perf_counter() - start) * 1000)

            load(names[0])
            prober = Prober(f"{url}/v2/models/m/infer", {"seldon-internal-model": names[0]})
            prober.start()
            # Idle and during-load latency are sampled in alternation (PAUSE s without loads
            # after every WINDOW s of loads), so both see the same machine (it is shared).
            idle: list[float] = []
            during: list[float] = []
            loading = 0.0
            pending = iter(names[1:])
            started = time.monotonic()
            while loading < budget:
                idle += prober.sample(PAUSE)
                prober.sink = during
                window = time.monotonic()
                name = None
                for name in pending:
                    load(name)
                    if time.monotonic() - window > WINDOW:
                        break
                prober.sink = None
                loading += time.monotonic() - window
                if name is None or name == names[-1]:
                    break
            wall = time.monotonic() - started
            prober.stop.set()
            prober.join(35)
    finally:
        server.stop()
    return {"mode": mode, "loaded": len(load_ms), "seconds": loading, "wall": wall,
            "first50": statistics.median(load_ms[1:51]), "last50": statistics.median(load_ms[-50:]),
            "idle_p50": pct(idle, 0.5), "during_p50": pct(during, 0.5),
            "during_p99": pct(during, 0.99), "failures": prober.failures}


def run_platform(models: int, budget: float) -> dict:
    """The whole path: N Models applied to a local platform (scheduler, Envoy, one MLServer +
    agent), until all are Available; inference on the first one through Envoy meanwhile."""
    run_dir = Path(tempfile.mkdtemp(prefix="core2-loads-platform-"))
    cfg = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}), pipelines=False)
    platform = Platform(run_dir, cfg).start()
    spec = json.dumps({"storageUri": str(IRIS), "requirements": ["sklearn"]})
    names = [f"model{i:04d}" for i in range(models)]
    try:
        client = SchedulerClient(platform.scheduler_address)
        client.apply("Model", names[0], spec)
        client.wait("Model", names[0], timeout=120)
        prober = Prober(f"{platform.inference_url}/v2/models/{names[0]}/infer")
        prober.start()
        idle = prober.sample(3)
        prober.sink = during = []
        started = time.monotonic()
        for name in names[1:]:
            client.apply("Model", name, spec)
        available = 0
        while time.monotonic() - started < budget:
            available = sum(s.state == "ModelAvailable" for s in client.status("Model"))
            if available == models:
                break
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        prober.sink = None
        idle_after = prober.sample(3)
        prober.stop.set()
        prober.join(35)
    finally:
        platform.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    return {"available": available, "seconds": elapsed, "idle_p50": pct(idle, 0.5),
            "during_p50": pct(during, 0.5), "during_p99": pct(during, 0.99),
            "after_p50": pct(idle_after, 0.5), "failures": prober.failures}


def print_table(rows: list[dict], models: int, budget: float) -> None:
    print(f"\n{models} sklearn models, loaded one at a time into one MLServer "
          f"(budget {budget:.0f} s per mode)")
    print(f"{'mode':12} {'loaded':>7} {'seconds':>8} {'load ms first50':>16} {'last50':>8} "
          f"{'last/first':>10} {'infer p50 idle':>15} {'during':>8} {'ratio':>6} "
          f"{'p99 during':>11} {'fail':>5}")
    for r in rows:
        print(f"{r['mode']:12} {r['loaded']:7d} {r['seconds']:8.1f} {r['first50']:16.1f} "
              f"{r['last50']:8.1f} {r['last50'] / r['first50']:10.2f} {r['idle_p50']:15.2f} "
              f"{r['during_p50']:8.2f} {r['during_p50'] / r['idle_p50']:6.2f} "
              f"{r['during_p99']:11.1f} {r['failures']:5d}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", type=int, default=1000)
    p.add_argument("--modes", default="stock,flat", help=f"comma-separated: {', '.join(MODES)}")
    p.add_argument("--budget", type=float, default=240, help="seconds of loading per mode")
    p.add_argument("--platform", action="store_true",
                   help="also the whole path: Models applied to a local platform until "
                        "Available, inference through Envoy (core2's load path only)")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-ups (platform.stop)
    rows = []
    with tempfile.TemporaryDirectory(prefix="core2-loads-") as tmp:
        for mode in filter(None, args.modes.split(",")):
            rows.append(run_mode(mode, args.models, args.budget, Path(tmp)))
            print(rows[-1], flush=True)
    if rows:
        print_table(rows, args.models, args.budget)
    if args.platform:
        r = run_platform(args.models, args.budget)
        print(f"\nplatform: {r['available']}/{args.models} Available in {r['seconds']:.1f} s; "
              f"inference through Envoy p50 {r['idle_p50']:.2f} ms idle before, "
              f"{r['during_p50']:.2f} ms during (ratio {r['during_p50'] / r['idle_p50']:.2f}), "
              f"{r['after_p50']:.2f} ms idle after; p99 during {r['during_p99']:.1f} ms; "
              f"{r['failures']} failures")


if __name__ == "__main__":
    main()
