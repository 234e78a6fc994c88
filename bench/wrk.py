"""Shared bench helpers: a platform with the sample models, and wrk runs parsed into numbers."""

import json
import re
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

from runtime.client import SchedulerClient
from runtime.local.config import LocalConfig, Ports
from runtime.local.platform import Platform

ROOT = Path(__file__).resolve().parents[1]
BODY = json.dumps({"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32",
                               "data": [6.0, 2.2, 5.0, 1.5]}]})


@contextmanager
def platform_with(models: dict[str, str]):
    """A local platform on free ports with `models` ({name: sample folder}) Available."""
    models_dir = ROOT / "samples" / "models"
    if not (models_dir / "iris" / "model.joblib").exists():
        subprocess.run(["python", str(ROOT / "samples" / "train_iris.py")], check=True)
    run_dir = Path(tempfile.mkdtemp(prefix="core2-bench-"))
    cfg = LocalConfig(ports=Ports(**{k: 0 for k in Ports.model_fields}), pipelines=False)
    platform = Platform(run_dir, cfg).start()
    try:
        client = SchedulerClient(platform.scheduler_address)
        for name, sample in models.items():
            client.apply("Model", name, json.dumps({"storageUri": str(models_dir / sample),
                                                    "requirements": ["sklearn"]}))
        for name in models:
            client.wait("Model", name, timeout=60)
        yield platform, client
    finally:
        platform.stop()
        shutil.rmtree(run_dir, ignore_errors=True)


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, headers: dict | None = None, seconds: int = 5, connections: int = 8,
        threads: int = 1) -> dict:
    """POST BODY to url with wrk; returns requests/s, p50/p99 latency (ms) and error count."""
    if not shutil.which("wrk"):
        raise SystemExit("bench needs wrk: apt-get install wrk")
    script = Path(tempfile.mkstemp(suffix=".lua")[1])
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(BODY)}",
             'wrk.headers["Content-Type"] = "application/json"']
    lines += [f'wrk.headers["{k}"] = "{v}"' for k, v in (headers or {}).items()]
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d",
                          f"{seconds}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, check=True).stdout
    script.unlink()
    pct = dict((p, _ms(v, u)) for p, v, u in
               re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out, re.M))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
            "p50": pct.get("50"), "p99": pct.get("99"),
            "errors": int(errors.group(1)) if errors else 0}


def alternate(cases: dict[str, dict], rounds: int = 3, seconds: int = 5) -> dict[str, dict]:
    """Run each case (kwargs for wrk) in turn, `rounds` times, and average per case, so
    every case sees the same machine conditions. Each round starts one case later, so with
    as many rounds as cases every case runs once in every position (no order bias)."""
    results: dict[str, list[dict]] = {name: [] for name in cases}
    names = list(cases)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            results[name].append(wrk(seconds=seconds, **cases[name]))
    return {name: {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
            for name, runs in results.items()}


def table(results: dict[str, dict], baseline: str) -> str:
    base = results[baseline]["rps"]
    rows = [f"{'case':36} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} "
            f"{'vs ' + baseline:>12}"]
    for name, r in results.items():
        rows.append(f"{name:36} {r['rps']:9.0f} {r['p50']:8.2f} {r['p99']:8.2f} "
                    f"{r['errors']:7.0f} {r['rps'] / base:12.3f}")
    return "\n".join(rows)
