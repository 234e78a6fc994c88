"""Adaptive experiments end to end (issue 15): feedback through the real Envoy (REST and gRPC)
reaches the experiment's learner, moves the weights Envoy routes by, survives a scheduler
restart; unknown ids and bad bodies get clear errors."""

import http.client
import json
import shutil
import urllib.error
import urllib.request
from collections import Counter

import grpc
import pytest
import yaml

from runtime import cli
from runtime.oip import request_from_json, response_to_json
from runtime.pb import feedback_pb2, feedback_pb2_grpc, grpc_service_pb2_grpc
from tests.conftest import IRIS2_CLASS, IRIS_CLASS, iris_request, platform_env, wait_for
from tests.infra.harness import STACKS

STRATEGY = {"type": "epsilonGreedy", "updateIntervalMs": 200, "minWeight": 5}


@pytest.fixture(scope="module")
def env(tmp_path_factory, sample_models):
    """iris and iris2 behind an adaptive experiment `iris-ab` (default iris; as in the
    staging stack, for `promote`)."""
    with platform_env(tmp_path_factory.mktemp("feedback"),
                      {"iris": (sample_models / "iris", {}),
                       "iris2": (sample_models / "iris2", {})}) as env:
        env.scheduler.apply("Experiment", "iris-ab", json.dumps({
            "default": "iris", "strategy": STRATEGY,
            "candidates": [{"name": "iris", "weight": 1}, {"name": "iris2", "weight": 1}]}))
        env.scheduler.wait("Experiment", "iris-ab", timeout=30)
        # Ready: Envoy may still route by the model's own route for a moment
        wait_for(lambda: env.infer("iris")[0] == 200 and
                 sum(c["pulls"] for c in _candidates(env).values()), 30, "experiment routing")
        yield env


class Rest:
    """One keep-alive connection to Envoy for inference and feedback."""

    def __init__(self, env):
        self.conn = http.client.HTTPConnection("127.0.0.1", int(env.url.rsplit(":", 1)[1]),
                                               timeout=60)

    def post(self, path: str, body: bytes, headers: dict | None = None):
        self.conn.request("POST", path, body, {"content-type": "application/json",
                                               **(headers or {})})
        resp = self.conn.getresponse()
        return resp.status, json.loads(resp.read()), resp

    def infer(self, path: str = "/v2/models/iris/infer", headers: dict | None = None):
        """(answer, request id)."""
        status, body, resp = self.post(path, iris_request(), headers)
        assert status == 200, body
        return body["outputs"][0]["data"][0], resp.getheader("x-request-id")

    def feedback(self, request_id: str, path: str = "/v2/models/iris/feedback", **value):
        return self.post(path, json.dumps({"request_id": request_id, **value}).encode())[:2]


def _candidates(env, name: str = "iris-ab") -> dict[str, dict]:
    [status] = env.scheduler.status("Experiment", name)
    return json.loads(status.detail_json)["candidates"]


def _reward_iris2(rest: Rest, n: int, feedback=None) -> None:
    """n requests, each rated 1 when iris2 answered, else 0."""
    for _ in range(n):
        answer, rid = rest.infer()
        status, body = (feedback or rest.feedback)(rid, reward=float(answer == IRIS2_CLASS))
        assert status == 200, body
        assert body["candidate"] == ("iris2" if answer == IRIS2_CLASS else "iris")


def test_rest_feedback_moves_traffic_and_survives_a_restart(env):
    rest = Rest(env)
    _reward_iris2(rest, 80)
    wait_for(lambda: _candidates(env)["iris2"]["weight"] >= 80, 30, "iris2 favoured")
    stats = _candidates(env)
    assert stats["iris2"]["meanReward"] == 1.0 and stats["iris"]["meanReward"] == 0.0
    assert stats["iris"]["weight"] >= 5  # minWeight keeps exploring
    assert sum(s["rewards"] for s in stats.values()) == 80
    assert sum(s["pulls"] for s in stats.values()) >= 80
    # Envoy routes by the learned weights
    split = Counter(env.predict_many("iris", 300))
    assert split[IRIS2_CLASS] >= 0.8 * 300, split

    env.platform.kill("scheduler")
    env.platform.restart("scheduler")
    after = _candidates(env)
    assert {n: (s["rewards"], s["weight"]) for n, s in after.items()} == \
        {n: (s["rewards"], s["weight"]) for n, s in stats.items()}
    rest = Rest(env)  # feedback goes on from the learned state
    _reward_iris2(rest, 5)
    wait_for(lambda: sum(s["rewards"] for s in _candidates(env).values()) == 85, 30,
             "feedback after restart")


def test_grpc_feedback_reaches_the_experiment(env):
    channel = grpc.insecure_channel(env.url.removeprefix("http://"))
    infer = grpc_service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer
    send = feedback_pb2_grpc.FeedbackStub(channel).Send
    before = _candidates(env)
    rated = Counter()
    request = request_from_json("iris", json.loads(iris_request()))
    for _ in range(10):
        reply, call = infer.with_call(request, metadata=[("seldon-model", "iris-ab.experiment")],
                                      timeout=30)
        rid = dict(call.initial_metadata())["x-request-id"]
        answer = response_to_json(reply)["outputs"][0]["data"][0]
        sent = send(feedback_pb2.FeedbackRequest(request_id=rid, label="good"),
                    metadata=[("seldon-model", "iris-ab.experiment")], timeout=30)
        assert sent.experiment == "iris-ab" and sent.reward == 1.0
        assert sent.candidate == ("iris2" if answer == IRIS2_CLASS else "iris")
        rated[sent.candidate] += 1
    after = _candidates(env)
    for name, count in rated.items():
        assert after[name]["rewards"] - before[name]["rewards"] == count

    with pytest.raises(grpc.RpcError) as err:
        send(feedback_pb2.FeedbackRequest(request_id="no-such-id", reward=1),
             metadata=[("seldon-model", "iris-ab.experiment")], timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'no-such-id'" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        send(feedback_pb2.FeedbackRequest(request_id=rid, reward=3),
             metadata=[("seldon-model", "iris-ab.experiment")], timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "reward: must be a number between 0 and 1" in err.value.details()
    channel.close()


def test_unknown_request_id_is_refused_naming_it(env):
    status, body = Rest(env).feedback("4f1c-not-an-answer", reward=1)
    assert status == 404
    assert "request_id: '4f1c-not-an-answer' is not an answer of an adaptive experiment" \
        in body["error"]


@pytest.mark.parametrize("body, message", [
    (b"{not json", "body: not JSON"),
    (b"[1, 2]", "body: Input should be a valid dictionary"),
    (b'{"reward": 1}', "body.request_id: Field required"),
    (b'{"request_id": "x"}', "give exactly one of reward"),
    (b'{"request_id": "x", "reward": 1, "label": "good"}', "give exactly one of reward"),
    (b'{"request_id": "x", "reward": 1.5}', "body.reward: Input should be less than or equal"),
    (b'{"request_id": "x", "reward": "high"}', "body.reward: Input should be a valid number"),
    (b'{"request_id": "x", "reward": 1, "truth": 2}', "body.truth: unknown field"),
])
def test_bad_feedback_bodies_get_clear_errors(env, body, message):
    status, reply, _ = Rest(env).post("/v2/models/iris/feedback", body)
    assert status == 400 and message in reply["error"], reply


def test_feedback_checks_who_answered(env):
    rest = Rest(env)
    _, rid = rest.infer()
    status, body = rest.feedback(rid, label="excellent")
    assert status == 400 and "label: 'excellent' is not one of" in body["error"], body
    status, body = rest.feedback(rid, path="/v2/pipelines/other/feedback", reward=1)
    assert status == 404, body  # Envoy: no pipeline of that name
    # a name Envoy routes but not through this experiment (straight to the service here)
    service = env.platform.ports["feedbackHttp"]
    req = urllib.request.Request(
        f"http://127.0.0.1:{service}/v2/models/other/feedback", method="POST",
        data=json.dumps({"request_id": rid, "reward": 1}).encode())
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code == 400
    assert f"request_id: {rid!r} was answered by experiment 'iris-ab', not by 'other'" in \
        json.loads(err.value.read())["error"]
    assert rest.feedback(rid, reward=0.5)[0] == 200
    status, body = rest.feedback(rid, reward=0.5)
    assert status == 409 and "already has feedback" in body["error"]
    # under a candidate's own name, through Envoy: its route carries the feedback routes
    # while it is in an adaptive experiment
    _, rid = rest.infer()
    status, body = rest.feedback(rid, path="/v2/models/iris2/feedback", reward=0.5)
    assert status == 200, body


def test_sticky_routes_stay_sticky_and_promote_winner_auto(env, tmp_path, capsys):
    stacks = tmp_path / "stacks"
    shutil.copytree(STACKS, stacks)
    argv = ["--scheduler", env.platform.scheduler_address, "promote", "iris-ab",
            "--from", "staging", "--to", "prod-gcp", "--winner", "auto",
            "--stacks-dir", str(stacks)]
    target = stacks / "Pulumi.prod-gcp.yaml"
    before = target.read_text()
    assert cli.main([*argv, "--min-rewards", "1000"]) == 2
    assert "--winner auto: experiment iris-ab: too little feedback" in capsys.readouterr().err
    assert target.read_text() == before

    rest = Rest(env)  # a client sending back x-seldon-route stays on its candidate
    for name, answer, reward in (("iris", IRIS_CLASS, 0.0), ("iris2", IRIS2_CLASS, 1.0)):
        while _candidates(env)[name]["rewards"] < 30:
            got, rid = rest.infer(headers={"x-seldon-route": f":{name}_1:"})
            assert got == answer
            assert rest.feedback(rid, reward=reward)[0] == 200
    wait_for(lambda: _candidates(env)["iris2"]["weight"] >= 80, 30, "iris2 favoured")
    capsys.readouterr()
    assert cli.main(["--scheduler", env.platform.scheduler_address, "experiment", "status",
                     "iris-ab"]) == 0
    shown = {c.pop("name"): c for c in json.loads(capsys.readouterr().out)["candidates"]}
    assert shown == _candidates(env) and set(shown["iris"]) == {
        "pulls", "rewards", "meanReward", "interval", "weight"}
    low, high = shown["iris2"]["interval"]
    assert 0.85 < low < high <= 1.0 and shown["iris2"]["weight"] >= 80
    assert shown["iris2"]["pulls"] >= shown["iris2"]["rewards"]
    assert cli.main(argv) == 0
    assert "--winner auto: iris2" in capsys.readouterr().err
    models = {m["name"]: m["spec"] for m in yaml.safe_load(target.read_text())["config"][
        "core2:models"]}
    assert models["iris"]["storageUri"] == "gs://core2-models/iris-sklearn/v2"  # iris2's
