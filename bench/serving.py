"""Iris REST throughput and latency through Envoy vs straight to MLServer, alternated in one
run on the same machine. Goal: through-Envoy throughput >= 0.95 of direct.

    .venv/bin/python bench/serving.py [--rounds 4] [--seconds 5] [--connections 8]
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.wrk import alternate, platform_with, table


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--seconds", type=int, default=5)
    p.add_argument("--connections", type=int, default=8)
    args = p.parse_args()
    with platform_with({"iris": "iris"}) as (platform, _):
        mlserver = f"http://127.0.0.1:{platform.replicas['mlserver-0']['http']}"
        c = {"connections": args.connections}
        results = alternate({
            "direct MLServer (stock, iris_1)": {"url": f"{mlserver}/v2/models/iris_1/infer", **c},
            "direct MLServer + name hook": {"url": f"{mlserver}/v2/models/iris/infer",
                                            "headers": {"seldon-internal-model": "iris_1"}, **c},
            "Envoy, path /v2/models/iris": {"url": f"{platform.inference_url}"
                                            "/v2/models/iris/infer", **c},
            "Envoy, seldon-model header": {"url": f"{platform.inference_url}/v2/models/iris/infer",
                                           "headers": {"seldon-model": "iris"}, **c},
        }, rounds=args.rounds, seconds=args.seconds)
    print(table(results, "direct MLServer (stock, iris_1)"))
    ratio = results["Envoy, path /v2/models/iris"]["rps"] / \
        results["direct MLServer (stock, iris_1)"]["rps"]
    print(f"\nthrough-Envoy / direct throughput: {ratio:.3f} (goal >= 0.95)")


if __name__ == "__main__":
    main()
