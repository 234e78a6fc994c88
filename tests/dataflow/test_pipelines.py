"""Pipelines end to end on a real Tansu broker and a real MLServer."""

import httpx

from tests.dataflow.conftest import outputs_of, tensor


def call_model(mlserver: str, model: str, inputs: list[dict]) -> list[dict]:
    r = httpx.post(f"{mlserver}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()["outputs"]


def test_chain_equals_calling_the_models_in_sequence(dataflow, mlserver):
    x = [1.5, -2.0, 3.0]
    first = call_model(mlserver, "add10", [tensor("x", x)])
    by_hand = call_model(mlserver, "mul10", first)
    r = dataflow.infer("chain", [tensor("x", x)])
    assert outputs_of(r) == {"OUTPUT": by_hand[0]["data"]} == {"OUTPUT": [115.0, 80.0, 130.0]}
    assert r.headers["x-pipeline-version"] == "1"
    assert r.headers["x-request-id"]
