"""What one model change costs a scheduler with many experiments and pipelines, before and
after typed events (issue 13): before, every model change woke every experiment and pipeline
watcher; now only the experiments and pipelines that follow the model hear of it.

An in-process Scheduler (no Envoy, agents that never answer) holds N models on two
replicas, E experiments (two candidate models each) and P pipelines (two step models each),
with status streams open as the platform has them: one on all experiments, one on all
pipelines (the controller, a `--watch`) and three on all pipelines (the dataflow services).
It then applies C model changes (a new replica count each) and reports the wall time, the
watcher callbacks that ran (status items queued to streams), and the time to build those
status items as each stream does. The same code runs on the tree under test and on the
revision before the change (`--before`, checked out with `git archive` into a temp dir):

    .venv/bin/python bench/events.py [--models 500 --experiments 200 --pipelines 200
                                      --changes 100 --before 8fba7eb]
"""

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the scheduler before typed events: models' changes fanned out to every watcher
BEFORE = "8fba7eb"


def _watch(sched, kind: int) -> asyncio.Queue:
    """A status stream on every resource of `kind`, as api.WatchStatus opens one."""
    q: asyncio.Queue = asyncio.Queue()
    if hasattr(sched, "bus"):  # typed events
        from runtime.scheduler.core import EVENTS
        sched.bus.subscribe(EVENTS[kind], lambda e: q.put_nowait(e.name))
    else:  # the hub's watcher set, (kind, name, queue)
        sched.watchers.add((kind, "", q))
    return q


async def _run(models: int, experiments: int, pipelines: int, changes: int,
               data: Path) -> dict:
    from runtime.pb import scheduler_pb2 as pb
    from runtime.scheduler import state as st
    from runtime.scheduler.core import Scheduler
    from runtime.scheduler.store import Store
    from runtime.scheduler.xds import XdsServer
    from runtime.specs import ExperimentSpec, ModelSpec
    from runtime.specs.pipeline import PipelineSpec

    class NoEnvoy(XdsServer):
        async def wait_applied(self, generation: int, timeout: float = 0) -> bool:
            return True

    sched = Scheduler(Store(data), NoEnvoy(), replica_lost_after_s=3600)
    for idx in range(2):
        sched.models.connect(st.Replica("mlserver", idx, ["sklearn"], 10**15, 0, "127.0.0.1",
                                        9000, 9001, 9002, 9003), set(), set())
    for i in range(models):
        sched.models.apply(f"m{i}", ModelSpec(storageUri=f"/m/{i}", requirements=["sklearn"]))
    for i in range(pipelines):
        steps = [{"name": f"m{(2 * i + k) % models}"} for k in range(2)]
        sched.pipelines.apply(f"p{i}", PipelineSpec.model_validate({"steps": steps}))
    for i in range(experiments):
        candidates = [{"name": f"m{(2 * i + k + 1) % models}", "weight": 50} for k in range(2)]
        sched.experiments.apply(f"e{i}", ExperimentSpec.model_validate(
            {"candidates": candidates}))
    streams = [(pb.EXPERIMENT, _watch(sched, pb.EXPERIMENT))] + \
        [(pb.PIPELINE, _watch(sched, pb.PIPELINE)) for _ in range(4)]
    for _, q in streams:
        while not q.empty():
            q.get_nowait()
    delivered = getattr(getattr(sched, "bus", None), "delivered", 0)
    start = time.perf_counter()
    for c in range(changes):
        name = f"m{(c * 7) % models}"
        sched.models.apply(name, ModelSpec(storageUri=f"/m/{name}", requirements=["sklearn"],
                                           replicas=1 + c % 2))
    applied = time.perf_counter() - start
    callbacks = sum(q.qsize() for _, q in streams)
    start = time.perf_counter()
    for kind, q in streams:  # each stream builds the status of every item it was woken for
        while not q.empty():
            item = q.get_nowait()  # before: (kind, name); now: name
            sched.status(kind, item[1] if isinstance(item, tuple) else item, missing_ok=True)
    built = time.perf_counter() - start
    handlers = getattr(getattr(sched, "bus", None), "delivered", 0) - delivered
    sched.store.close()
    return {"apply s": round(applied, 3), "watcher callbacks": callbacks,
            "status build s": round(built, 3), "bus handler calls": handlers}


def _measure(tree: Path, args: argparse.Namespace) -> dict:
    """One run in a fresh interpreter with `tree` first on the path."""
    with tempfile.TemporaryDirectory() as data:
        out = subprocess.run(
            [sys.executable, __file__, "--one", str(data), "--models", str(args.models),
             "--experiments", str(args.experiments), "--pipelines", str(args.pipelines),
             "--changes", str(args.changes)],
            env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, cwd=tree,
            capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=500)
    p.add_argument("--experiments", type=int, default=200)
    p.add_argument("--pipelines", type=int, default=200)
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--before", default=BEFORE, help="git revision to compare with")
    p.add_argument("--one", metavar="DATA_DIR", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(asyncio.run(_run(args.models, args.experiments, args.pipelines,
                                          args.changes, Path(args.one)))))
        return
    with tempfile.TemporaryDirectory() as old:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.before, "runtime"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old], input=archive, check=True)
        before = _measure(Path(old), args)
    after = _measure(ROOT, args)
    print(f"{args.models} models, {args.experiments} experiments, {args.pipelines} "
          f"pipelines, {args.changes} model changes")
    print(f"{'':22}{'before ' + args.before:>18}{'after':>12}")
    for key in before:
        print(f"{key:22}{before[key]:>18}{after[key]:>12}")


if __name__ == "__main__":
    main()
