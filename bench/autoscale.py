"""Model autoscaling under a load ramp, on a real local platform (scheduler, Envoy, MLServer,
agents): iris with minReplicas 1 / maxReplicas 3 on a 3-replica server.

Prints, from the moment the load starts: when the autoscaler first decided to scale up, when
the 2nd and 3rd replicas were serving (Available: loaded and routed by Envoy); then the
throughput on 1 replica against 3 (side by side, same run), the time from the load's end back
to 1 replica, and the failed requests (must be 0).

    .venv/bin/python bench/autoscale.py [--threads 4] [--scale-up-in-flight 0.1] ...

iris answers in under a millisecond, so its requests in flight (MLServer's own timing, which
starts when MLServer handles the request) stay below 1 even at saturation: the thresholds
here are low to match it; for real models the defaults (0.7 / 0.2) apply."""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.client import SchedulerClient
from runtime.local.config import LocalAutoscaling, LocalConfig, LocalServer, Ports
from runtime.local.platform import Platform
from tests.load import Load

IRIS = Path(__file__).resolve().parents[1] / "samples" / "models" / "iris"


def _state(client: SchedulerClient) -> tuple[int, int, str]:
    """(replicas Available, replicas placed, autoscaling reason) of iris."""
    [s] = client.status("Model", "iris")
    replicas = s.versions[0].replicas
    reason = json.loads(s.detail_json or "{}").get("autoscaling", {}).get("reason", "")
    return sum(r.state == "Available" for r in replicas), len(replicas), reason


def _rate(load: Load, seconds: float) -> float:
    before, started = load.total, time.monotonic()
    time.sleep(seconds)  # a measuring window, not a readiness wait
    return (load.total - before) / (time.monotonic() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=4, help="concurrent clients in the ramp")
    p.add_argument("--scale-up-in-flight", type=float, default=0.1)
    p.add_argument("--scale-down-in-flight", type=float, default=0.04)
    p.add_argument("--cooldown", type=float, default=2.0, help="scaleUpCooldownSeconds")
    p.add_argument("--down-delay", type=float, default=3.0, help="scaleDownDelaySeconds")
    p.add_argument("--report", type=float, default=1.0, help="agents' loadReportSeconds")
    p.add_argument("--window", type=float, default=3.0, help="throughput window, seconds")
    a = p.parse_args()
    scaling = LocalAutoscaling(scaleUpInFlight=a.scale_up_in_flight,
                               scaleDownInFlight=a.scale_down_in_flight,
                               scaleUpCooldownSeconds=a.cooldown,
                               scaleDownDelaySeconds=a.down_delay, loadReportSeconds=a.report)
    cfg = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}), pipelines=False,
                      servers=[LocalServer(name="mlserver", replicas=3)], autoscaling=scaling)
    with tempfile.TemporaryDirectory(prefix="core2-autoscale-") as run_dir:
        platform = Platform(Path(run_dir), cfg).start()
        client = SchedulerClient(platform.scheduler_address)
        try:
            client.apply("Model", "iris", json.dumps({
                "storageUri": str(IRIS), "requirements": ["sklearn"], "minReplicas": 1,
                "maxReplicas": 3}))
            client.wait("Model", "iris", timeout=120)
            marks: dict[str, float] = {}
            with Load(platform.inference_url, "iris", threads=a.threads) as load:
                one = _rate(load, a.window)  # the autoscaler reacts meanwhile, at the earliest
                while "3" not in marks:
                    available, _, reason = _state(client)
                    now = time.monotonic() - load.started
                    if reason.startswith("up:"):
                        marks.setdefault("decided", now)
                    for n in (2, 3):
                        if available >= n:
                            marks.setdefault(str(n), now)
                    if now > 180:
                        raise SystemExit(f"not on 3 replicas after 180s ({available}: {reason})")
                    time.sleep(0.1)
                three = _rate(load, a.window)
            stopped = time.monotonic()
            while _state(client)[1] != 1:
                if time.monotonic() - stopped > 180:
                    raise SystemExit("not back on 1 replica after 180s")
                time.sleep(0.1)
            back = time.monotonic() - stopped
        finally:
            client.close()
            platform.stop()
    print(f"settings: {scaling.model_dump_json()}; {a.threads} client threads")
    print(f"load start -> first scale-up decision: {marks['decided']:.1f}s")
    print(f"load start -> 2nd replica serving:     {marks['2']:.1f}s")
    print(f"load start -> 3rd replica serving:     {marks['3']:.1f}s")
    print(f"throughput: {one:.0f} req/s while on 1 replica (first {a.window:.0f}s), "
          f"{three:.0f} req/s on 3 replicas: x{three / one:.2f}")
    print(f"load end -> back on 1 replica:         {back:.1f}s")
    print(f"requests: {load.total}, failed: {len(load.failures)}")


if __name__ == "__main__":
    main()
