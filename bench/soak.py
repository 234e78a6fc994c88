"""Soak: N minutes of mixed traffic on a supervised local platform, then errors per load and
each service's RSS and open-fd growth (from /proc/<pid>/status and /proc/<pid>/fd, the
service's process and its children). Not run in CI; growth is measured from the end of a
warm-up, so caches filling at start are not counted as leaks.

    .venv/bin/python bench/soak.py [--minutes 10] [--warmup 30] [--sample 10]
                                   [--kafka-fetch-wait-ms 2] [--kafka embedded|apache]
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from runtime.client import SchedulerClient  # noqa: E402
from runtime.kafka import KafkaConfig  # noqa: E402
from runtime.local.config import LocalConfig, Ports  # noqa: E402
from runtime.local.platform import Platform  # noqa: E402
from runtime.local.supervisor import Supervisor  # noqa: E402
from runtime.specs.manifest import load_file  # noqa: E402
from tests.conftest import PROBE_INPUT, iris_request  # noqa: E402
from tests.traffic import AsyncLoad, Grpc, Rest, SyncLoad, tensor  # noqa: E402

MODELS = ROOT / "samples" / "models"


def tree(pid: int) -> list[int]:
    """pid and its descendants (MLServer may run workers)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                todo += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
    return out


def usage(pid: int) -> tuple[int, int]:
    """(RSS in KiB, open fds) of a service's process tree; (0, 0) if it is gone."""
    rss = fds = 0
    for p in tree(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
            rss += int(next(ln.split()[1] for ln in status.splitlines()
                            if ln.startswith("VmRSS:")))
            fds += len(list(Path(f"/proc/{p}/fd").iterdir()))
        except (OSError, StopIteration):
            continue
    return rss, fds


def start(run_dir: Path, fetch_wait_ms: int | None, broker: str = "embedded",
          ) -> tuple[Supervisor, threading.Thread, SchedulerClient]:
    platform = Platform(run_dir, LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}),
                                             kafkaFetchWaitMs=fetch_wait_ms,
                                             kafkaBroker=broker))
    sup = Supervisor(platform, log=lambda m: print(f"  supervisor: {m}", flush=True))
    sup.start(progress=lambda m: print(f"  {m}", flush=True))
    thread = threading.Thread(target=sup.run, daemon=True)
    thread.start()
    client = SchedulerClient(platform.scheduler_address)
    for name in ("iris", "iris2"):
        client.apply("Model", name, json.dumps({"storageUri": str(MODELS / name),
                                                "requirements": ["sklearn"]}))
    for r in load_file(ROOT / "samples/pipelines/models.yaml"):
        if r.name in ("add10", "mul10"):
            client.apply_resource(r)
    for name in ("iris", "iris2", "add10", "mul10"):
        client.wait("Model", name, timeout=120)
    for r in load_file(ROOT / "samples/pipelines/chain.yaml"):
        client.apply_resource(r)
    client.wait("Pipeline", "chain", timeout=120)
    client.apply("Experiment", "ab", json.dumps(
        {"candidates": [{"name": "iris", "weight": 50}, {"name": "iris2", "weight": 50}]}))
    client.wait("Experiment", "ab", timeout=60)
    return sup, thread, client


def loads(platform: Platform) -> tuple[list[SyncLoad], AsyncLoad]:
    url, envoy = platform.inference_url, f"127.0.0.1:{platform.ports['envoy']}"
    iris = json.loads(iris_request())
    syncs = [
        SyncLoad("model REST", Rest(url, "/v2/models/iris/infer", iris,
                                    lambda d: d["outputs"][0]["data"] == [2])),
        SyncLoad("model gRPC", Grpc(envoy, "iris", "predict", PROBE_INPUT,
                                    lambda r: len(r.outputs) == 1)),
        SyncLoad("experiment REST", Rest(url, "/v2/models/iris/infer", iris,
                                         lambda d: d["outputs"][0]["data"] in ([1], [2]),
                                         headers={"seldon-model": "ab.experiment"})),
        SyncLoad("pipeline REST", Rest(url, "/v2/pipelines/chain/infer",
                                       {"inputs": [tensor("x", [1.0])]},
                                       lambda d: d["outputs"][0]["data"] == [110.0])),
    ]
    cfg = KafkaConfig(bootstrap=platform.kafka_bootstrap, prefix=platform.config.kafkaPrefix,
                      namespace=platform.config.kafkaNamespace)
    return syncs, AsyncLoad(cfg, "chain", lambda x: [(x + 10) * 10], interval=0.05)


def sample(platform: Platform) -> dict[str, tuple[int, int]]:
    return {n: usage(s.pid) for n, s in platform.services.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10)
    p.add_argument("--warmup", type=float, default=30, help="seconds before the baseline")
    p.add_argument("--sample", type=float, default=10, help="seconds between samples")
    # The embedded broker (Tansu, memory storage) keeps every record batch and a fetch scans
    # them: once a partition holds ~3,000 batches a 2 ms fetch wait returns nothing and the
    # pipeline stalls (measured; README "Pipelines"). A longer wait postpones that.
    p.add_argument("--kafka-fetch-wait-ms", type=int, default=LocalConfig().kafkaFetchWaitMs)
    p.add_argument("--kafka", choices=("embedded", "apache"), default="embedded",
                   help="the broker: the embedded Tansu, or Apache Kafka (scripts/tools)")
    a = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="core2-soak-") as tmp:
        print("starting a supervised local platform", flush=True)
        sup, thread, client = start(Path(tmp) / "run", a.kafka_fetch_wait_ms, a.kafka)
        platform = sup.platform
        syncs, aload = loads(platform)
        try:
            for s in syncs:
                s.start()
            aload.start()
            began = time.monotonic()
            time.sleep(a.warmup)
            base, restarts0 = sample(platform), {n: w.restarts for n, w in
                                                 sup.supervision.watched.items()}
            print(f"baseline after {a.warmup:.0f}s warm-up; running {a.minutes:g} min",
                  flush=True)
            end = began + a.warmup + a.minutes * 60
            last = base
            while time.monotonic() < end:
                time.sleep(min(a.sample, max(0.0, end - time.monotonic())))
                last = sample(platform)
                total = sum(r for r, _ in last.values())
                print(f"  {time.monotonic() - began:6.0f}s  RSS {total / 1024:7.1f} MiB  "
                      f"async {len(aload.answers)}/{len(aload.acked)}", flush=True)
        finally:
            for s in syncs:
                s.stop()
            aload.stop()
        # answers still on their way when the load stopped
        deadline = time.monotonic() + 30
        while aload.unanswered() and time.monotonic() < deadline:
            time.sleep(0.5)
        report(syncs, aload, base, last, restarts0, sup)
        chain = client.status("Pipeline", "chain")[0]
        print(f"\npipeline chain at the end: {chain.state} {chain.reason}")
        sup.stop()
        thread.join(30)
        sup.shutdown()
    return 0


def report(syncs, aload, base, last, restarts0, sup) -> None:
    print(f"\n{'LOAD':18} {'CALLS':>8} {'ERRORS':>7} {'p50 ms':>8} {'p99 ms':>8}")
    for s in syncs:
        lat = sorted((o.end - o.start) * 1000 for o in s.outcomes)
        bad = sum(not o.ok for o in s.outcomes)
        p50, p99 = (lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0
                    for q in (0.5, 0.99))
        print(f"{s.name:18} {len(s.outcomes):8} {bad:7} {p50:8.1f} {p99:8.1f}")
    lost = aload.unanswered()
    print(f"{'pipeline async':18} {len(aload.acked):8} {len(lost) + len(aload.errors):7}  "
          f"(unanswered {len(lost)}, errors {len(aload.errors)}, wrong {len(aload.wrong)}, "
          f"duplicates {aload.duplicates})")
    print(f"\n{'SERVICE':24} {'RSS MiB':>9} {'growth':>8} {'FDS':>5} {'growth':>7} "
          f"{'RESTARTS':>8}")
    for name, (rss, fds) in last.items():
        rss0, fds0 = base.get(name, (0, 0))
        restarts = sup.supervision.watched[name].restarts - restarts0.get(name, 0)
        print(f"{name:24} {rss / 1024:9.1f} {(rss - rss0) / 1024:+8.1f} {fds:5} "
              f"{fds - fds0:+7} {restarts:8}")


if __name__ == "__main__":
    sys.exit(main())
