"""Pipelines vs the same models called directly in sequence, on each broker side by side: the
embedded Tansu and Apache Kafka (`scripts/tools` fetches its jars).

Starts a real MLServer with the sample models (plus copies add10b, mul10b), and per broker its
own broker, an in-process scheduler stand-in and the dataflow services (the engine, which calls
the models, and the pipeline gateway), with a 2-step chain (add10 -> mul10) and a 4-step chain
(add10 -> mul10 -> add10b -> mul10b). Prints, per chain and concurrency (1, 8, 32): p50/p99
latency, throughput and errors of both paths (one right after the other), the pipeline/direct
throughput ratio and the per-step overhead at concurrency 1; the median and p99 ms between a
request's records on consecutive topics (producer timestamps: a model topic's pair brackets the
model call); the CPU each process spends per request; and the idle CPU of broker + dataflow
services (% of one core, from /proc) after start and again after the cells.

    .venv/bin/python bench/pipelines.py [--requests 300] [--kafka embedded|apache|both]
                                        [--idle-seconds 20] [--warmup 2000] [--broker-jit full|c1]
                                        [--quick]
"""

import argparse
import asyncio
import itertools
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.soak import tree  # noqa: E402
from runtime.broker import BROKER_KINDS, start_kafka  # noqa: E402
from runtime.dataflow.pacing import IDLE_S  # noqa: E402
from runtime.kafka import FETCH_WAIT_MS  # noqa: E402
from runtime.kafka_apache import ApacheKafka, start_apache_kafka  # noqa: E402
from runtime.procs import Service, free_port, http_ok, wait_until  # noqa: E402
from tests.dataflow.conftest import BROKER_KIND_OF, Dataflow, start_mlserver  # noqa: E402
from tests.dataflow.fake_scheduler import FakeScheduler  # noqa: E402

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}
CHAINS = {2: ["add10", "mul10"], 4: ["add10", "mul10", "add10b", "mul10b"]}
COPIES = {"add10b": "add10", "mul10b": "mul10"}   # more models for the 4-step chain
CONCURRENCY = (1, 8, 32)
TICK = os.sysconf("SC_CLK_TCK")
WARMUP = 20  # calls before each measured cell


def chain_spec(models: list[str]) -> dict:
    steps = [{"name": models[0]}] + [{"name": m, "inputs": [prev]}
                                     for prev, m in itertools.pairwise(models)]
    return {"steps": steps, "output": {"steps": [models[-1]]}}


def model_repo(logs: Path) -> Path:
    repo = logs / "models"
    for copy, source in COPIES.items():
        shutil.copytree(ROOT / "samples/models" / source, repo / copy)
        settings = repo / copy / "model-settings.json"
        settings.write_text(json.dumps({**json.loads(settings.read_text()), "name": copy}))
    return repo


async def direct(session: aiohttp.ClientSession, mlserver: str, models: list[str]) -> None:
    body = BODY
    for m in models:
        async with session.post(f"{mlserver}/v2/models/{m}/infer", json=body) as r:
            assert r.status == 200, await r.text()
            body = {"inputs": (await r.json())["outputs"]}


async def pipeline(session: aiohttp.ClientSession, gateway: str, name: str) -> None:
    async with session.post(f"{gateway}/v2/pipelines/{name}/infer", json=BODY) as r:
        assert r.status == 200, await r.text()
        await r.read()


async def measure(call, n: int, concurrency: int) -> tuple[list[float], float, int]:
    """n calls, `concurrency` at a time: latencies (ms, sorted), throughput, errors."""
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(min(WARMUP, n)):  # warm up connections and caches
            await call(session)
        sem = asyncio.Semaphore(concurrency)
        lat: list[float] = []
        errors = 0

        async def one():
            nonlocal errors
            async with sem:
                t = time.perf_counter()
                try:
                    await call(session)
                    lat.append((time.perf_counter() - t) * 1000)
                except (TimeoutError, AssertionError, aiohttp.ClientError) as e:
                    errors += 1
                    if errors <= 3:
                        print(f"  error: {e!r}"[:300], flush=True)

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        rps = n / (time.perf_counter() - t)
    return sorted(lat), rps, errors


def topics_of(cfg, name: str, models: list[str]) -> list[str]:
    topics = [cfg.pipeline_inputs(name)]
    for m in models:
        topics += [cfg.model_inputs(m), cfg.model_outputs(m)]
    return [*topics, cfg.pipeline_outputs(name)]


def hop_breakdown(cfg, name: str, models: list[str], n: int) -> list[tuple[str, float, float]]:
    """(hop, median ms, p99 ms) between one request's records on consecutive topics, over
    the last n requests of the pipeline: the records' producer timestamps (1 ms resolution),
    so a hop's time runs from the record's produce to the next record's produce."""
    from confluent_kafka import Consumer, TopicPartition

    topics = topics_of(cfg, name, models)
    consumer = Consumer(cfg.consumer(None))
    stamps: dict[str, dict[bytes, int]] = {}
    try:
        for t in topics:
            lo, hi = consumer.get_watermark_offsets(TopicPartition(t, 0), timeout=10)
            consumer.assign([TopicPartition(t, 0, max(lo, hi - n))])
            got: dict[bytes, int] = {}
            while len(got) < min(n, hi - lo):
                m = consumer.poll(5)
                if m is None:
                    break
                if not m.error() and (key := m.key()) is not None:
                    got[key] = m.timestamp()[1]
            stamps[t] = got
    finally:
        consumer.close()
    keys = set.intersection(*(set(v) for v in stamps.values()))
    out = []
    for a, b in itertools.pairwise(topics):
        deltas: list[float] = sorted(stamps[b][k] - stamps[a][k] for k in keys) or [float("nan")]
        label = f"{a.split('.', 2)[2]} -> {b.split('.', 2)[2]}"
        out.append((label, statistics.median(deltas), pct(deltas, .99)))
    return out


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for p in {q for pid in pids for q in tree(pid)}:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])   # utime, stime
        except OSError:
            continue
    return total / TICK


def idle_cpu(services: dict[str, Service], seconds: float) -> dict[str, float]:
    """% of one core each service's process tree used over `seconds` with nothing flowing."""
    before = {n: cpu_seconds([s.pid]) for n, s in services.items()}
    t = time.monotonic()
    time.sleep(seconds)
    wall = time.monotonic() - t
    return {n: 100 * (cpu_seconds([s.pid]) - before[n]) / wall for n, s in services.items()}


def pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def cpu_per_request(procs: dict[str, Service], n: int, work) -> tuple[object, dict]:
    """work()'s result, and the CPU ms per call (n calls) each process used meanwhile, the
    bench's own load generator ("client") included; "cores busy": all of it over the wall
    time (2.0 on a 2-core machine: the cell is bound by CPU, not by any one process)."""
    before = {name: cpu_seconds([s.pid]) for name, s in procs.items()}
    mine, start = os.times(), time.monotonic()
    result = work()
    wall = time.monotonic() - start
    cpu = {name: 1000 * (cpu_seconds([s.pid]) - before[name]) / n for name, s in procs.items()}
    now = os.times()
    cpu["client"] = 1000 * (now.user - mine.user + now.system - mine.system) / n
    cpu["cores busy"] = sum(cpu.values()) * n / 1000 / wall
    return result, cpu


def run(kind: str, args, logs: Path, mlserver: Service, mlserver_url: str) -> dict:
    """One broker's numbers: its own broker, scheduler stand-in and dataflow services."""
    logs = logs / kind
    scheduler = FakeScheduler().start(port := free_port())
    scheduler.address = f"127.0.0.1:{port}"
    if kind == "apache":
        broker, bootstrap = start_apache_kafka(logs, kafka=ApacheKafka(
            logs / "apache-kafka", full_jit=args.broker_jit == "full"))
    else:
        broker, bootstrap = start_kafka(kind, logs)
    BROKER_KIND_OF[bootstrap] = kind  # the services' fetch wait follows the broker
    df = None
    out: dict[str, dict] = {"cells": {}, "hops": {}, "cpu": {}}
    try:
        names = {steps: f"chain{steps}" for steps in CHAINS}
        for steps, name in names.items():
            scheduler.set_pipeline(name, chain_spec(CHAINS[steps]))
        df = Dataflow(logs, scheduler, bootstrap, mlserver_url)
        for name in df.services:
            df.start(name)
        scheduler.wait_ready(list(names.values()), timeout=120)
        # start-up work settles, and the embedded broker's idle consumers begin to doze
        time.sleep(IDLE_S + 1)
        out["idle"] = idle_cpu({"broker": broker, **df.services}, args.idle_seconds)
        # steady state, as a running broker is: Apache Kafka's JIT warms over its first
        # thousands of records (a produce -> consume hop took 1.7 ms over the first 300 and
        # 0.44 ms after 2,500). Not the embedded broker: it has no JIT, and every record it
        # keeps makes its fetches slower (README: its known limit).
        for name in names.values() if kind == "apache" else ():
            asyncio.run(measure(lambda s, n=name: pipeline(s, df.url, n), args.warmup, 8))
        for steps, name in names.items():
            models = CHAINS[steps]
            for c in CONCURRENCY:
                # side by side: direct, then the pipeline, under the same conditions
                procs = {"mlserver": mlserver, "broker": broker, **df.services}
                calls = args.requests + min(WARMUP, args.requests)
                d, d_cpu = cpu_per_request(procs, calls, lambda m=models, c=c: asyncio.run(
                    measure(lambda s: direct(s, mlserver_url, m), args.requests, c)))
                p, p_cpu = cpu_per_request(procs, calls, lambda n=name, c=c: asyncio.run(
                    measure(lambda s: pipeline(s, df.url, n), args.requests, c)))
                out["cells"][steps, c] = {"direct": d, "pipeline": p}
                out["cpu"][steps, c] = {"direct": d_cpu, "pipeline": p_cpu}
                print(f"  {kind} {steps} steps, concurrency {c}: done", flush=True)
            # sequential calls again, so the last records are free of queueing
            asyncio.run(measure(lambda s, n=name: pipeline(s, df.url, n), 100, 1))
            out["hops"][steps] = hop_breakdown(df.kafka, name, models, 100)
        # idle again after the traffic: the embedded broker's fetches cost more with every
        # record it keeps, and its clients doze only after IDLE_S without records
        time.sleep(IDLE_S + 1)
        out["idle after"] = idle_cpu({"broker": broker, **df.services}, args.idle_seconds)
    finally:
        for svc in (df.services.values() if df else []):
            svc.stop()
        broker.stop()
        scheduler.stop()
    return out


def report(results: dict, args) -> None:
    kinds = list(results)
    print(f"\n{args.requests} requests per cell (Apache Kafka after {args.warmup} per chain, "
          f"{args.broker_jit} JIT); "
          "fetch wait (ms): "
          + ", ".join(f"{k} {FETCH_WAIT_MS[k]}" for k in kinds)
          + f"; load average {os.getloadavg()[0]:.1f}")
    head = "".join(f"{k + ' p50':>16}{'p99':>8}{'req/s':>8}{'err':>5}" for k in kinds)
    print(f"{'steps conc path':<24}{head}")
    for steps in CHAINS:
        for c in CONCURRENCY:
            for path in ("direct", "pipeline"):
                row = ""
                for k in kinds:
                    lat, rps, err = results[k]["cells"][steps, c][path]
                    row += f"{pct(lat, .5):>16.2f}{pct(lat, .99):>8.2f}{rps:>8.1f}{err:>5}"
                print(f"{steps:>5} {c:>4} {path:<13}{row}")
    print("\nratios")
    for k in kinds:
        cells = results[k]["cells"]
        for steps in CHAINS:
            d1, p1 = cells[steps, 1]["direct"][0], cells[steps, 1]["pipeline"][0]
            step = (statistics.median(p1) - statistics.median(d1)) / steps
            tput = "  ".join(
                f"c{c} {cells[steps, c]['pipeline'][1] / cells[steps, c]['direct'][1]:.2f}"
                for c in CONCURRENCY)
            print(f"  {k:<9} {steps} steps: per-step overhead at c1 {step:.2f} ms (p50 "
                  f"difference / steps); throughput pipeline/direct {tput}")
    print("\nms between a request's records on consecutive topics, median / p99:")
    for steps in CHAINS:
        print(f"  {'hop (' + str(steps) + ' steps)':<48}" + "".join(f"{k:>16}" for k in kinds))
        for i, (label, _, _) in enumerate(results[kinds[0]]["hops"][steps]):
            print(f"  {label:<48}" + "".join(
                f"{results[k]['hops'][steps][i][1]:>9.1f} /{results[k]['hops'][steps][i][2]:>5.0f}"
                for k in kinds))
    print("\nCPU ms per request at concurrency 32 (each process tree; client: this bench's "
          "load generator), and how many of the machine's cores the cell kept busy:")
    names = list(results[kinds[0]]["cpu"][2, 32]["pipeline"])
    names.remove("cores busy")
    print(f"  {'':<24}" + "".join(f"{n:>13}" for n in names) + f"{'total':>9}{'cores busy':>12}")
    for k in kinds:
        for steps in CHAINS:
            for path in ("direct", "pipeline"):
                cpu = results[k]["cpu"][steps, 32][path]
                print(f"  {k + ' ' + str(steps) + ' ' + path:<24}"
                      + "".join(f"{cpu[n]:>13.2f}" for n in names)
                      + f"{sum(cpu[n] for n in names):>9.2f}{cpu['cores busy']:>12.2f}")
    print(f"\nidle CPU, % of one core over {args.idle_seconds:g} s (two pipelines loaded), "
          "after start and after the cells:")
    names = list(results[kinds[0]]["idle"])
    print(f"  {'':<26}" + "".join(f"{n:>14}" for n in names) + f"{'total':>10}")
    for k in kinds:
        for when, label in (("idle", "after start"), ("idle after", "after the cells")):
            idle = results[k][when]
            print(f"  {k + ', ' + label:<26}" + "".join(f"{idle[n]:>14.1f}" for n in names)
                  + f"{sum(idle.values()):>10.1f}")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--warmup", type=int, default=2000,
                   help="pipeline requests per chain before the measured cells (Apache "
                   "Kafka only)")
    p.add_argument("--kafka", choices=(*BROKER_KINDS, "both"), default="both")
    p.add_argument("--broker-jit", choices=("full", "c1"), default="full",
                   help="Apache Kafka's JIT: full, as a production broker runs (default), or "
                   "C1 only, as the tests start it (quicker start, more CPU per request)")
    p.add_argument("--quick", action="store_true",
                   help="100 requests per cell, 5 s idle, 300 warm-up requests")
    args = p.parse_args()
    if args.quick:
        args.requests, args.idle_seconds, args.warmup = 100, 5, 300
    kinds = BROKER_KINDS if args.kafka == "both" else (args.kafka,)
    logs = Path(tempfile.mkdtemp(prefix="bench-pipelines-"))
    ml, mlserver_url = start_mlserver(logs, model_repo(logs))
    try:
        wait_until(lambda: all(http_ok(f"{mlserver_url}/v2/models/{m}/ready") for m in COPIES),
                   60, "MLServer's model copies ready", proc=ml)
        results = {kind: run(kind, args, logs, ml, mlserver_url) for kind in kinds}
    finally:
        ml.stop()
    report(results, args)


if __name__ == "__main__":
    main()
