"""The cost of routing through an experiment vs straight to one model (throughput ratio, same
run), and the time from `experiment start` to the split being live in Envoy.

    .venv/bin/python bench/experiments.py [--rounds 3] [--seconds 5] [--starts 10]
"""

import argparse
import json
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wrk import BODY, alternate, platform_with, table

EXPERIMENT = {"candidates": [{"name": "iris", "weight": 50}, {"name": "iris2", "weight": 50}]}


def _live(url: str) -> bool:
    req = urllib.request.Request(url, data=BODY.encode(), headers={
        "content-type": "application/json", "seldon-model": "ab.experiment"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def time_to_live(platform, client, starts: int) -> list[float]:
    """Apply the experiment, then poll Envoy until it routes `ab.experiment`; then stop it."""
    url = f"{platform.inference_url}/v2/models/iris/infer"
    took = []
    for _ in range(starts):
        t0 = time.perf_counter()
        client.apply("Experiment", "ab", json.dumps(EXPERIMENT))
        while not _live(url):
            pass
        took.append((time.perf_counter() - t0) * 1000)
        client.delete("Experiment", "ab")
        while _live(url):
            pass
    return took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--starts", type=int, default=10)
    args = p.parse_args()
    with platform_with({"iris": "iris", "iris2": "iris2"}) as (platform, client):
        live = time_to_live(platform, client, args.starts)
        client.apply("Experiment", "ab", json.dumps(EXPERIMENT))
        client.wait("Experiment", "ab")
        url = f"{platform.inference_url}/v2/models/iris/infer"
        c = {"url": url, "connections": args.connections}
        results = alternate({
            "one model (seldon-model: iris2)": {**c, "headers": {"seldon-model": "iris2"}},
            "experiment (seldon-model: ab.experiment)": {
                **c, "headers": {"seldon-model": "ab.experiment"}},
        }, rounds=args.rounds, seconds=args.seconds)
    print(table(results, "one model (seldon-model: iris2)"))
    print(f"\nexperiment start -> split live in Envoy: median {statistics.median(live):.1f} ms, "
          f"max {max(live):.1f} ms over {len(live)} starts")


if __name__ == "__main__":
    main()
