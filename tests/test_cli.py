"""The core2 CLI as a user runs it: up, apply, infer, status, down."""

import json
import os
import subprocess
import sys
import time

import yaml

from runtime.local.platform import pid_alive, read_state
from tests.conftest import ROOT, SAMPLES, free_ports


def core2(run_dir, *args, timeout=120):
    return subprocess.run([sys.executable, "-m", "runtime.cli", "--run-dir", str(run_dir), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_up_apply_infer_down(tmp_path, sample_models):
    config = tmp_path / "local.yaml"
    config.write_text(yaml.safe_dump({"ports": free_ports().model_dump()}))
    run_dir = tmp_path / "run"
    started = time.monotonic()
    up = core2(run_dir, "up", "--detach", "-c", str(config))
    took = time.monotonic() - started
    try:
        assert up.returncode == 0, up.stderr
        assert took < 30, f"core2 up took {took:.1f}s"
        assert "waiting for" in up.stderr  # long waits show progress
        state = read_state(run_dir)
        assert all(pid_alive(p) for p in state["pids"].values())

        # What `make up` loads: models, an experiment and a pipeline
        applied = core2(run_dir, "apply", "-f", str(SAMPLES / "quickstart.yaml"))
        assert applied.returncode == 0, applied.stderr
        assert "ModelAvailable" in applied.stderr and "PipelineReady" in applied.stderr
        assert "ExperimentReady" in applied.stderr
        out = core2(run_dir, "pipeline", "infer", "chain", json.dumps(
            {"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]}))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["outputs"][0]["data"] == [110.0]
        payload = json.dumps({"inputs": [{"name": "predict", "shape": [1, 4],
                                          "datatype": "FP32", "data": [6.0, 2.2, 5.0, 1.5]}]})
        for extra in ([], ["--grpc"]):
            out = core2(run_dir, "model", "infer", "iris", payload, *extra)
            assert out.returncode == 0, out.stderr
            assert json.loads(out.stdout)["outputs"][0]["data"] == [2]
        listed = core2(run_dir, "model", "list")
        assert "iris" in listed.stdout and "ModelAvailable" in listed.stdout
        missing = core2(run_dir, "model", "status", "nope")
        assert missing.returncode == 1 and "not found" in missing.stderr
        assert core2(run_dir, "status").returncode == 0
        unload = core2(run_dir, "model", "unload", "iris")
        assert unload.returncode == 0, unload.stderr
    finally:
        down = core2(run_dir, "down")
    assert down.returncode == 0
    assert not any(pid_alive(p) for p in state["pids"].values())
    assert read_state(run_dir) is None
