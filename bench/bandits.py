"""Adaptive experiments: regret of each strategy against always choosing the best candidate
(simulated rewards, seeded), and the cost on routing throughput of an experiment with a
strategy vs fixed weights (real Envoy + MLServer, both experiments live, same run), with
the scheduler CPU that Envoy's access log of the adaptive routes costs.

    .venv/bin/python bench/bandits.py [--requests 20000] [--seeds 5] [--rounds 3] [--seconds 5]
"""

import argparse
import json
import os
import random
import statistics
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wrk import BODY, platform_with, wrk
from runtime.scheduler.bandit import Arm, weights
from runtime.specs.experiment import Strategy

PAYOFFS = {"two close (0.50 vs 0.55)": [0.50, 0.55],
           "two apart (0.30 vs 0.70)": [0.30, 0.70],
           "three (0.40, 0.45, 0.60)": [0.40, 0.45, 0.60]}
STRATEGIES = ["epsilonGreedy", "thompson", "ucb1"]
CANDIDATES = [{"name": "iris", "weight": 50}, {"name": "iris2", "weight": 50}]


def regret(strategy: Strategy | None, payoffs: list[float], requests: int, batch: int,
           seed: int) -> float:
    """Expected regret (sum of best payoff - payoff of the candidate routed to) over
    `requests`, the weights recomputed every `batch` requests; None: fixed even split."""
    traffic, rewards, rng = (random.Random(seed + i) for i in range(3))
    arms = [Arm() for _ in payoffs]
    current = [1] * len(payoffs)
    total, best = 0.0, max(payoffs)
    for _ in range(requests // batch):
        for i in traffic.choices(range(len(arms)), weights=current, k=batch):
            total += best - payoffs[i]
            arms[i].pulls += 1
            arms[i].add(1.0 if rewards.random() < payoffs[i] else 0.0)
        if strategy is not None:
            current = weights(strategy, arms, rng)
    return total


def regret_table(requests: int, batch: int, seeds: int, min_weight: int) -> str:
    rows = [f"{'payoffs':28} {'strategy':14} {'regret':>9} {'per 1k req':>11} "
            f"{'vs fixed 1/k':>13} {'weights/s*':>11}"]
    for label, payoffs in PAYOFFS.items():
        fixed = statistics.mean(regret(None, payoffs, requests, batch, s) for s in range(seeds))
        rows.append(f"{label:28} {'fixed (even)':14} {fixed:9.1f} "
                    f"{fixed * 1000 / requests:11.2f} {1:13.3f} {'':>11}")
        for kind in STRATEGIES:
            strategy = Strategy(type=kind, minWeight=min_weight)
            t0 = time.perf_counter()
            r = statistics.mean(regret(strategy, payoffs, requests, batch, s)
                                for s in range(seeds))
            per_update = (time.perf_counter() - t0) / (seeds * requests // batch)
            rows.append(f"{'':28} {kind:14} {r:9.1f} {r * 1000 / requests:11.2f} "
                        f"{r / fixed:13.3f} {1 / per_update:11.0f}")
    return "\n".join(rows)


def _live(url: str, experiment: str) -> bool:
    req = urllib.request.Request(f"{url}/v2/models/iris/infer", data=BODY.encode(), headers={
        "content-type": "application/json", "seldon-model": f"{experiment}.experiment"})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status == 200
    except urllib.error.HTTPError:
        return False


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput_table(rounds: int, seconds: int, connections: int) -> str:
    with platform_with({"iris": "iris", "iris2": "iris2"}) as (platform, client):
        client.apply("Experiment", "fixed", json.dumps({"candidates": CANDIDATES}))
        client.apply("Experiment", "adaptive", json.dumps({
            "candidates": CANDIDATES, "strategy": {"type": "thompson", "seed": 1}}))
        for name in ("fixed", "adaptive"):
            client.wait("Experiment", name)
            while not _live(platform.inference_url, name):  # Envoy has its route
                time.sleep(0.05)
        scheduler = platform.services["scheduler"].pid
        url = f"{platform.inference_url}/v2/models/iris/infer"
        cases = {f"{n} (seldon-model: {n}.experiment)": n for n in ("fixed", "adaptive")}
        runs: dict[str, list[dict]] = {c: [] for c in cases}
        names = list(cases)
        for r in range(rounds):  # alternate, each case first in turn
            for case in names[r % 2:] + names[:r % 2]:
                cpu = _cpu_seconds(scheduler)
                res = wrk(url, {"seldon-model": f"{cases[case]}.experiment"}, seconds,
                          connections)
                res["cpu_ms_per_1k"] = (_cpu_seconds(scheduler) - cpu) * 1e6 / max(
                    1, res["rps"] * seconds)
                runs[case].append(res)
        [status] = client.status("Experiment", "adaptive")
        pulls = sum(c["pulls"] for c in json.loads(status.detail_json)["candidates"].values())
    avg = {c: {k: statistics.mean(r[k] for r in rs) for k in rs[0]} for c, rs in runs.items()}
    base = avg[names[0]]["rps"]
    rows = [f"{'case':40} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'errors':>6} "
            f"{'vs fixed':>9} {'scheduler CPU ms / 1k req':>26}"]
    rows += [f"{c:40} {a['rps']:8.0f} {a['p50']:7.2f} {a['p99']:7.2f} {a['errors']:6.0f} "
             f"{a['rps'] / base:9.3f} {a['cpu_ms_per_1k']:26.1f}" for c, a in avg.items()]
    rows.append(f"(requests the scheduler attributed from Envoy's access log: {pulls})")
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--requests", type=int, default=20_000)
    p.add_argument("--batch", type=int, default=100,
                   help="requests between weight updates (updateIntervalMs x request rate)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--min-weight", type=int, default=5,
                   help="strategy.minWeight (percent): its floor alone costs regret")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--no-throughput", action="store_true", help="the simulation only")
    p.add_argument("--no-regret", action="store_true", help="the throughput only")
    args = p.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}\n")
    if not args.no_regret:
        print(f"Regret over {args.requests} requests, weights updated every {args.batch}, "
              f"mean of {args.seeds} seeds (minWeight {args.min_weight}%):")
        print(regret_table(args.requests, args.batch, args.seeds, args.min_weight))
        print("* weight updates per second: the scheduler's cost of one recompute\n")
    if not args.no_throughput:
        print(throughput_table(args.rounds, args.seconds, args.connections))
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
