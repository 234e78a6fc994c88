"""Over-commit thrash against the all-resident case, through Envoy, side by side in one run.

Two servers on one local platform, each with the same six models (three scikit-learn iris
models, cheap to load, and three as cheap to call but dear to load: a logistic regression
carrying 30,000 Python objects, as a large vocabulary would), 100M each:
`resident` has memory for all six; `thrash` for four (over-commit lets all six be placed), so
a client calling the six in turn forces a reload on most requests. Both are driven alternately
(rounds of --seconds each). Run once per eviction policy of the agent (CORE2_AGENT_EVICTION):
`lru` (the least recently used) and `reload-cost` (core2's default: least recently used, with
a model that is dear to reload counted as used later; runtime/agent/models.py).

    .venv/bin/python bench/overcommit.py [--rounds 3] [--seconds 5] [--policies lru,reload-cost]
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.client import SchedulerClient
from runtime.local.config import LocalConfig, LocalServer, Ports
from runtime.local.platform import Platform
from runtime.specs.fetch import FetchRules

ROOT = Path(__file__).resolve().parents[1]
IRIS = ROOT / "samples" / "models" / "iris"
PROBE = {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32",
                     "data": [6.0, 2.2, 5.0, 1.5]}]}
KINDS = ["light", "heavy"] * 3  # called in this order, round and round


def train_heavy(folder: Path) -> Path:
    import joblib
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    folder.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=1000).fit(x, y)
    model.vocabulary_ = {f"token{i}": i for i in range(30_000)}  # unpickled on every load
    joblib.dump(model, folder / "model.joblib")
    return folder


def drive(client: httpx.Client, url: str, names: list[str], seconds: float
          ) -> list[tuple[str, float]]:
    """Call the models in turn for `seconds`; (kind, latency ms) per request."""
    latencies = []
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        name = names[i % len(names)]
        start = time.perf_counter()
        r = client.post(f"{url}/v2/models/{name}/infer", json=PROBE)
        if r.status_code != 200:
            raise SystemExit(f"{name}: {r.status_code} {r.text}")
        latencies.append((name.rsplit("-", 1)[1].rstrip("0123456789"),
                          (time.perf_counter() - start) * 1000))
        i += 1
    return latencies


def misses(platform: Platform, replica: str) -> float:
    port = platform.replicas[replica]["agent_metrics"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    found = re.search(r"^seldon_cache_miss_count\{.*\} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def run_policy(policy: str, heavy: Path, rounds: int, seconds: float) -> dict[str, dict]:
    os.environ["CORE2_AGENT_EVICTION"] = policy  # the agents inherit it
    run_dir = Path(tempfile.mkdtemp(prefix="core2-overcommit-"))
    rules = FetchRules(localRoots=[str(heavy.parent)])
    cfg = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}), pipelines=False,
                      servers=[LocalServer(name="resident", memory="10G", fetch=rules),
                               LocalServer(name="thrash", memory="400M",
                                           overCommitPercentage=100, fetch=rules)])
    platform = Platform(run_dir, cfg).start()
    try:
        client = SchedulerClient(platform.scheduler_address)
        names: dict[str, list[str]] = {"resident": [], "thrash": []}
        for server, models in names.items():
            for i, kind in enumerate(KINDS):
                name = f"{server}-{kind}{i}"
                uri = IRIS if kind == "light" else heavy
                client.apply("Model", name, json.dumps({
                    "storageUri": str(uri), "requirements": ["sklearn"], "memory": "100M",
                    "server": server}))
                client.wait("Model", name, timeout=120)
                models.append(name)
        results: dict[str, list[tuple[str, float]]] = {server: [] for server in names}
        with httpx.Client(timeout=120) as http:
            for models in names.values():  # warm: every model once
                drive(http, platform.inference_url, models, 0.5)
            before = misses(platform, "thrash-0")
            for r in range(rounds):
                order = list(names) if r % 2 == 0 else list(reversed(names))
                for server in order:
                    results[server] += drive(http, platform.inference_url, names[server],
                                             seconds)
            reloads = misses(platform, "thrash-0") - before
    finally:
        platform.stop()
        shutil.rmtree(run_dir, ignore_errors=True)
    out = {}
    for server, samples in results.items():
        lat = sorted(ms for _, ms in samples)
        out[server] = {"rps": len(lat) / (rounds * seconds), "p50": lat[len(lat) // 2],
                       "p90": lat[int(len(lat) * 0.9)], "requests": len(lat)}
        for kind in ("light", "heavy"):
            out[server][kind] = statistics.median(ms for k, ms in samples if k == kind)
    out["thrash"]["reloads"] = reloads
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--policies", default="lru,reload-cost")
    args = p.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-ups (platform.stop)
    with tempfile.TemporaryDirectory(prefix="core2-heavy-") as tmp:
        heavy = train_heavy(Path(tmp) / "heavy")
        rows = {policy: run_policy(policy, heavy, args.rounds, args.seconds)
                for policy in args.policies.split(",")}
    print("\nsix models (3 cheap, 3 dear to load) called in turn through Envoy, one client; "
          "thrash holds four")
    print(f"{'policy':12} {'server':9} {'req/s':>7} {'p50 ms':>8} {'p90 ms':>8} "
          f"{'cheap p50':>10} {'dear p50':>9} {'reloads/req':>12} {'vs resident req/s':>19}")
    for policy, r in rows.items():
        ratio = r["thrash"]["rps"] / r["resident"]["rps"]
        for server in ("resident", "thrash"):
            s = r[server]
            share = f"{s['reloads'] / s['requests']:12.2f}" if "reloads" in s else " " * 12
            print(f"{policy:12} {server:9} {s['rps']:7.1f} {s['p50']:8.1f} {s['p90']:8.1f} "
                  f"{s['light']:10.1f} {s['heavy']:9.1f} {share} "
                  f"{ratio if server == 'thrash' else 1.0:19.3f}")


if __name__ == "__main__":
    main()
