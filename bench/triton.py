"""The cost of reaching Triton through the agent's proxy (Triton has no name hook, so every
request to a Triton-hosted model passes the agent, which renames it to the internal name).

One local platform with an MLServer and a Triton server; tfsimple on Triton, iris on MLServer.
Sequential requests on one keep-alive connection each, measured side by side in one run
(rounds alternate so a busy moment of the shared machine hits every path alike):

- `triton direct`: straight to Triton's HTTP port, by internal name (no core2 at all);
- `agent -> triton`: to the agent's proxy with the internal-name header (the extra hop);
- `envoy -> agent -> triton`: what a user gets;
- `envoy -> mlserver (same model)`: the same add/sub as a custom MLServer runtime
  (samples/models/tfsimple-mlserver) through Envoy and the name hook (no agent hop);
- `envoy -> mlserver (iris)`: an sklearn model, for scale.

    .venv/bin/python bench/triton.py [--requests 2000] [--rounds 5]

Prints p50/p99 latency per path and the proxy's added p50.
"""

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from runtime.client import SchedulerClient
from runtime.local.config import LocalConfig, LocalServer, Ports
from runtime.local.platform import Platform
from runtime.procs import free_port

ROOT = Path(__file__).resolve().parents[1]
TFSIMPLE = json.dumps({"inputs": [
    {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": list(range(16))},
    {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": [1] * 16}]}).encode()
IRIS = json.dumps({"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32",
                               "data": [6.0, 2.2, 5.0, 1.5]}]}).encode()


def timed(port: int, path: str, body: bytes, headers: dict, n: int) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    out = []
    try:
        for _ in range(n):
            started = time.perf_counter()
            conn.request("POST", path, body, {"content-type": "application/json", **headers})
            resp = conn.getresponse()
            resp.read()
            out.append(time.perf_counter() - started)
            if resp.status != 200:
                raise RuntimeError(f"{path}: HTTP {resp.status}")
    finally:
        conn.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="per path, over all rounds")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    ports = Ports(**{k: free_port() for k in Ports.model_fields})
    platform = Platform(Path(tempfile.mkdtemp(prefix="core2-bench-triton-")), LocalConfig(
        ports=ports, pipelines=False,
        servers=[LocalServer(name="mlserver"), LocalServer(name="triton", serverConfig="triton")]))
    platform.start()
    try:
        client = SchedulerClient(platform.scheduler_address)
        client.apply("Model", "tfsimple", json.dumps({
            "storageUri": str(ROOT / "samples/models/tfsimple"), "requirements": ["triton"]}))
        client.apply("Model", "iris", json.dumps({
            "storageUri": str(ROOT / "samples/models/iris"), "requirements": ["sklearn"]}))
        client.apply("Model", "tfsimple-mlserver", json.dumps({
            "storageUri": str(ROOT / "samples/models/tfsimple-mlserver"),
            "requirements": ["mlserver"]}))
        for name in ("tfsimple", "iris", "tfsimple-mlserver"):
            client.wait("Model", name, timeout=120)
        triton, envoy = platform.replicas["triton-0"], ports.envoy
        internal = {"seldon-internal-model": "tfsimple_1"}
        paths = {
            "triton direct": (triton["http"], "/v2/models/tfsimple_1/infer", TFSIMPLE, {}),
            "agent -> triton": (triton["agent_http"], "/v2/models/tfsimple/infer", TFSIMPLE,
                                internal),
            "envoy -> agent -> triton": (envoy, "/v2/models/tfsimple/infer", TFSIMPLE, {}),
            "envoy -> mlserver (same model)": (envoy, "/v2/models/tfsimple-mlserver/infer",
                                               TFSIMPLE, {}),
            "envoy -> mlserver (iris)": (envoy, "/v2/models/iris/infer", IRIS, {}),
        }
        per_round = max(1, args.requests // args.rounds)
        for spec in paths.values():  # warm up connections and caches
            timed(*spec, 50)
        samples: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, spec in paths.items():
                samples[name] += timed(*spec, per_round)
        print(f"{per_round * args.rounds} sequential REST requests per path, {args.rounds} "
              "alternating rounds")
        p50 = {}
        for name, s in samples.items():
            s.sort()
            p50[name] = statistics.median(s) * 1000
            print(f"  {name:30s} p50 {p50[name]:6.2f} ms   p99 "
                  f"{s[int(len(s) * 0.99) - 1] * 1000:6.2f} ms")
        print(f"the agent's proxy adds {p50['agent -> triton'] - p50['triton direct']:.2f} ms "
              f"p50; through Envoy {p50['envoy -> agent -> triton'] / p50['triton direct']:.2f}x "
              "Triton direct; the same model on MLServer through Envoy "
              f"{p50['envoy -> mlserver (same model)'] / p50['envoy -> agent -> triton']:.2f}x "
              "Triton's")
    finally:
        platform.stop()


if __name__ == "__main__":
    main()
