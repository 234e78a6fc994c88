"""Two-step pipeline (add10 -> mul10) vs calling the two models in sequence, same run, on
each broker: the embedded Tansu and Apache Kafka (`scripts/tools` fetches its jars).

Starts the broker, a real MLServer with the sample models, an in-process scheduler stand-in
and the three dataflow services; prints p50/p99 latency (sequential calls), throughput and
errors (concurrent calls) for both paths and the per-step overhead, brokers side by side.

    .venv/bin/python bench/pipelines.py [--requests 300] [--concurrency 32]
                                        [--kafka embedded|apache|both]
"""

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.broker import BROKER_KINDS, start_kafka  # noqa: E402
from runtime.kafka import FETCH_WAIT_MS  # noqa: E402
from runtime.procs import Service, free_port, http_ok, wait_until  # noqa: E402
from tests.dataflow.conftest import (  # noqa: E402
    BROKER_KIND_OF,
    SAMPLE_MODELS,
    Dataflow,
    sample_pipelines,
)
from tests.dataflow.fake_scheduler import FakeScheduler  # noqa: E402

BODY = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [4], "data": [1, 2, 3, 4]}]}


def start_mlserver(logs: Path) -> tuple[Service, str]:
    import shutil

    repo = logs / "models"
    for name in SAMPLE_MODELS:
        shutil.copytree(ROOT / "samples/models" / name, repo / name)
    http = free_port()
    svc = Service("mlserver", [str(ROOT / ".venv/bin/mlserver"), "start", str(repo)], logs,
                  env={"MLSERVER_HTTP_PORT": str(http), "MLSERVER_GRPC_PORT": str(free_port()),
                       "MLSERVER_METRICS_PORT": str(free_port()),
                       "MLSERVER_PARALLEL_WORKERS": "0"}).start()
    url = f"http://127.0.0.1:{http}"
    wait_until(lambda: all(http_ok(f"{url}/v2/models/{m}/ready") for m in SAMPLE_MODELS),
               90, "MLServer ready", proc=svc, interval=0.3)
    return svc, url


async def direct(session: aiohttp.ClientSession, mlserver: str) -> None:
    async with session.post(f"{mlserver}/v2/models/add10/infer", json=BODY) as r:
        first = await r.json()
    async with session.post(f"{mlserver}/v2/models/mul10/infer",
                            json={"inputs": first["outputs"]}) as r:
        assert r.status == 200, await r.text()
        await r.read()


async def pipeline(session: aiohttp.ClientSession, gateway: str) -> None:
    async with session.post(f"{gateway}/v2/pipelines/chain/infer", json=BODY) as r:
        assert r.status == 200, await r.text()
        await r.read()


async def measure(call, n: int, concurrency: int) -> tuple[list[float], float, int]:
    """Sequential latencies (ms, sorted), then throughput and errors at `concurrency`."""
    connector = aiohttp.TCPConnector(limit=concurrency + 4)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        for _ in range(20):  # warm up connections and caches
            await call(session)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            await call(session)
            lat.append((time.perf_counter() - t) * 1000)
        sem = asyncio.Semaphore(concurrency)
        errors = 0

        async def one():
            nonlocal errors
            async with sem:
                try:
                    await call(session)
                except (TimeoutError, AssertionError, aiohttp.ClientError) as e:
                    errors += 1
                    if errors <= 3:
                        print(f"  error: {e!r}"[:300], flush=True)

        t = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        rps = n / (time.perf_counter() - t)
    return sorted(lat), rps, errors


def hop_breakdown(df, n: int) -> list[tuple[str, float]]:
    """Median ms between the records of one request on consecutive topics (producer
    timestamps), over the last n requests of the chain pipeline."""
    from confluent_kafka import Consumer, TopicPartition

    cfg = df.kafka
    topics = [cfg.pipeline_inputs("chain"), cfg.model_inputs("add10"),
              cfg.model_outputs("add10"), cfg.model_inputs("mul10"),
              cfg.model_outputs("mul10"), cfg.pipeline_outputs("chain")]
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
                if not m.error():
                    got[m.key()] = m.timestamp()[1]
            stamps[t] = got
    finally:
        consumer.close()
    keys = set.intersection(*(set(v) for v in stamps.values()))
    out = []
    for a, b in zip(topics, topics[1:], strict=False):
        deltas = sorted(stamps[b][k] - stamps[a][k] for k in keys)
        label = f"{a.split('.', 2)[2]} -> {b.split('.', 2)[2]}"
        out.append((label, statistics.median(deltas) if deltas else float("nan")))
    return out


def pct(lat: list[float], q: float) -> float:
    return lat[min(len(lat) - 1, int(q * len(lat)))]


def run(kind: str, args, logs: Path, mlserver_url: str) -> dict:
    """One broker's numbers: its own broker, scheduler stand-in and dataflow services."""
    logs = logs / kind
    scheduler = FakeScheduler().start(port := free_port())
    scheduler.address = f"127.0.0.1:{port}"
    broker, bootstrap = start_kafka(kind, logs)
    BROKER_KIND_OF[bootstrap] = kind  # the services' fetch wait follows the broker
    df = None
    try:
        scheduler.set_pipeline("chain", sample_pipelines()["chain"])
        df = Dataflow(logs, scheduler, bootstrap, mlserver_url)
        for name in df.services:
            df.start(name)
        scheduler.wait_ready(["chain"], timeout=90)
        d_lat, d_rps, d_err = asyncio.run(measure(lambda c: direct(c, mlserver_url),
                                                  args.requests, args.concurrency))
        p_lat, p_rps, p_err = asyncio.run(measure(lambda c: pipeline(c, df.url),
                                                  args.requests, args.concurrency))
        # sequential pipeline calls again, so the last records are free of queueing
        asyncio.run(measure(lambda c: pipeline(c, df.url), 100, 1))
        hops = hop_breakdown(df, 100)
    finally:
        for svc in (df.services.values() if df else []):
            svc.stop()
        broker.stop()
        scheduler.stop()
    return {"direct": (d_lat, d_rps, d_err), "pipeline": (p_lat, p_rps, p_err), "hops": hops}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--requests", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--kafka", choices=(*BROKER_KINDS, "both"), default="both")
    args = p.parse_args()
    kinds = BROKER_KINDS if args.kafka == "both" else (args.kafka,)
    logs = Path(tempfile.mkdtemp(prefix="bench-pipelines-"))
    ml, mlserver_url = start_mlserver(logs)
    try:
        results = {kind: run(kind, args, logs, mlserver_url) for kind in kinds}
    finally:
        ml.stop()
    print(f"two-step chain, {args.requests} requests; throughput and errors at concurrency "
          f"{args.concurrency}; fetch wait (ms): "
          + ", ".join(f"{k} {FETCH_WAIT_MS[k]}" for k in kinds))
    head = "".join(f"{k + ' p50':>14}{'p99':>8}{'req/s':>8}{'errors':>8}" for k in kinds)
    print(f"{'path':<24}{head}")
    for path, label in (("direct", "direct add10 -> mul10"), ("pipeline", "pipeline chain")):
        row = ""
        for k in kinds:
            lat, rps, err = results[k][path]
            row += f"{pct(lat, .5):>14.2f}{pct(lat, .99):>8.2f}{rps:>8.1f}{err:>8}"
        print(f"{label:<24}{row}")
    for k in kinds:
        d_lat, d_rps, _ = results[k]["direct"]
        p_lat, p_rps, _ = results[k]["pipeline"]
        overhead = (statistics.median(p_lat) - statistics.median(d_lat)) / 2
        print(f"{k}: per-step overhead (p50 difference / 2 steps) {overhead:.2f} ms; "
              f"throughput pipeline/direct {p_rps / d_rps:.2f}")
    print("median ms between a request's records (producer timestamps, 1 ms resolution):")
    print(f"  {'hop':<50}" + "".join(f"{k:>10}" for k in kinds))
    for i, (label, _) in enumerate(results[kinds[0]]["hops"]):
        print(f"  {label:<50}" + "".join(f"{results[k]['hops'][i][1]:>10.1f}" for k in kinds))


if __name__ == "__main__":
    main()
