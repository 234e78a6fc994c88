"""Step batching (`steps[].batch`, samples/pipelines/batch.yaml): one model call for several
requests, outputs split back per request. The `rows` model answers `ROWS`, the first dimension
of the call it got, so each request sees how many rows its call held."""

import time
from concurrent.futures import ThreadPoolExecutor

from runtime.dataflow.batching import merge, split
from tests.dataflow.conftest import outputs_of, tensor


def concurrently(dataflow, pipeline: str, inputs: list[list[dict]]) -> list:
    with ThreadPoolExecutor(len(inputs)) as pool:
        return list(pool.map(lambda i: dataflow.infer(pipeline, i), inputs))


def calls_seen(results: list[dict], rows: list[int]) -> float:
    """How many model calls served these requests (each call's rows are shared out)."""
    return sum(n / got["ROWS"][0] for got, n in zip(results, rows, strict=True))


def test_merge_and_split_along_the_first_dimension():
    a = {"inputs": [tensor("x", [1.0]), {"name": "m", "datatype": "INT64", "shape": [1, 2],
                                         "data": [[1, 2]]}]}
    b = {"inputs": [tensor("x", [2.0, 3.0]), {"name": "m", "datatype": "INT64",
                                              "shape": [2, 2], "data": [3, 4, 5, 6]}]}
    request, sizes = merge([a, b])
    assert sizes == [1, 2]
    assert request["inputs"][0] == tensor("x", [1.0, 2.0, 3.0])
    assert request["inputs"][1]["shape"] == [3, 2]
    assert request["inputs"][1]["data"] == [1, 2, 3, 4, 5, 6]
    parts = split({"outputs": request["inputs"]}, sizes)
    flat_m = {**a["inputs"][1], "data": [1, 2]}  # data comes back flat (row-major)
    assert parts == [[a["inputs"][0], flat_m], b["inputs"]]
    assert merge([a, {"inputs": [tensor("x", [1.0])]}]) is None  # other tensor names
    assert merge([a, {"inputs": [tensor("x", [1.0], "INT64"), a["inputs"][1]]}]) is None
    assert split({"outputs": [tensor("y", [1.0, 2.0])]}, [1, 2]) is None  # rows do not add up


def test_concurrent_requests_share_model_calls_and_get_their_own_answers(dataflow):
    rows = [1 + i % 2 for i in range(8)]
    inputs = [[tensor("x", [float(i)] * n)] for i, n in enumerate(rows)]
    results = [outputs_of(r) for r in concurrently(dataflow, "batch", inputs)]
    for i, (got, n) in enumerate(zip(results, rows, strict=True)):
        assert got["OUTPUT"] == [i + 10.0] * n
        assert len(set(got["ROWS"])) == 1 and n <= got["ROWS"][0] <= 8, got
    assert calls_seen(results, rows) < len(inputs), results


def test_without_a_window_concurrent_requests_are_answered_correctly(dataflow):
    inputs = [[tensor("x", [float(i)])] for i in range(8)]
    results = [outputs_of(r) for r in concurrently(dataflow, "batch-now", inputs)]
    assert [got["OUTPUT"] for got in results] == [[i + 10.0] for i in range(8)]
    assert all(1 <= got["ROWS"][0] <= 4 for got in results), results
    assert calls_seen(results, [1] * 8) <= 8


def test_a_request_alone_is_answered_when_the_window_ends(dataflow):
    start = time.monotonic()
    got = outputs_of(dataflow.infer("batch", [tensor("x", [5.0, 6.0])]))
    elapsed = time.monotonic() - start
    assert got == {"OUTPUT": [15.0, 16.0], "ROWS": [2, 2]}
    assert 0.3 <= elapsed < 5, elapsed  # windowMs: 300
    start = time.monotonic()
    assert outputs_of(dataflow.infer("batch-now", [tensor("x", [1.0])]))["ROWS"] == [1]
    assert time.monotonic() - start < 2


def test_requests_that_cannot_be_concatenated_go_one_by_one(dataflow):
    shapes = [[2], [1, 2], [2], [1, 2]]
    inputs = [[{"name": "x", "datatype": "FP32", "shape": s, "data": [1.0, 2.0]}]
              for s in shapes]
    results = [outputs_of(r) for r in concurrently(dataflow, "batch", inputs)]
    assert [got["ROWS"] for got in results] == [[2, 2], [1], [2, 2], [1]]


def test_a_failed_batched_call_fails_each_of_its_requests(dataflow):
    inputs = [[tensor("x", [-1.0 if i == 0 else float(i)])] for i in range(4)]
    responses = concurrently(dataflow, "batch", inputs)
    assert responses[0].status_code == 400, responses[0].text
    failed = [r for r in responses if r.status_code != 200]
    for r in failed:
        assert r.status_code == 400
        assert r.json()["error"].startswith("step rows (model rows): HTTP 400"), r.text
    assert len(failed) >= 2, [r.text for r in responses]  # batched with the bad one


def test_a_batch_that_fails_inside_the_gateway_answers_each_request_with_an_error():
    """A bug while splitting a batched answer must not leave its requests unanswered (the
    callers would wait out their timeouts)."""
    import asyncio

    from runtime.dataflow.modelgateway import ModelGateway, StepCall

    answered: list[tuple[str, int, bytes | str]] = []
    gw = ModelGateway("http://127.0.0.1:1",
                      lambda call, status, body, _headers: answered.append(
                          (call.key, status, body)))

    async def answer(*_):
        return 200, b'{"outputs": [5]}'  # not tensors: splitting it raises

    gw._call_retrying = answer  # type: ignore[method-assign]
    value = b'{"inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]}'
    calls = [StepCall("p", "rows", "rows", key, value, [("pipeline", "p")]) for key in "ab"]
    asyncio.run(gw._infer_batch(calls))
    assert [(key, status) for key, status, _ in answered] == [("a", 500), ("b", 500)]
    assert all(isinstance(body, str) and "the model gateway failed" in body
               and "(batch of 2)" in body for _, _, body in answered)
