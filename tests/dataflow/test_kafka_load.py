"""Load on Apache Kafka: 2,000 pipeline requests at concurrency 32, every one answered right.
(Apache Kafka only: the embedded broker is known to stall after a few thousand batches in a
partition; bench/pipelines.py measures both.)"""

import asyncio
import time

import httpx
import pytest

from tests.dataflow.conftest import running_broker, running_dataflow, running_scheduler

REQUESTS, CONCURRENCY = 2000, 32


@pytest.fixture(scope="module")
def broker_kind() -> str:
    return "apache"


broker = pytest.fixture(scope="module", name="broker")(running_broker)
scheduler = pytest.fixture(scope="module", name="scheduler")(running_scheduler)
dataflow = pytest.fixture(scope="module", name="dataflow")(running_dataflow)


async def load(url: str) -> tuple[list[str], float]:
    """Send REQUESTS chain requests, CONCURRENCY at a time; returns (errors, seconds)."""
    errors: list[str] = []
    sem = asyncio.Semaphore(CONCURRENCY)
    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def one(i: int) -> None:
            body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                                "data": [float(i)]}]}
            async with sem:
                try:
                    r = await client.post(f"{url}/v2/pipelines/chain/infer", json=body)
                except httpx.HTTPError as e:
                    errors.append(f"{i}: {e!r}")
                    return
            want = [(i + 10.0) * 10]
            if r.status_code != 200 or r.json()["outputs"][0]["data"] != want:
                errors.append(f"{i}: {r.status_code} {r.text[:200]}")

        started = time.monotonic()
        await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        return errors, time.monotonic() - started


def test_2000_pipeline_requests_at_concurrency_32_without_errors(dataflow):
    errors, seconds = asyncio.run(load(dataflow.url))
    print(f"{REQUESTS} requests at concurrency {CONCURRENCY}: {len(errors)} errors, "
          f"{seconds:.1f} s ({REQUESTS / seconds:.0f} req/s)")
    assert not errors, f"{len(errors)} of {REQUESTS} failed, e.g. {errors[:3]}"
