"""The scheduler's learner of adaptive experiments, on its own (fast layer; the real
processes are in test_feedback*.py): weights follow rewards at a bounded rate, state
survives a new learner on the same store, feedback is attributed or refused."""

import asyncio
import json
import time

import pytest

from runtime.scheduler.adaptive import Adaptive, FeedbackError
from runtime.scheduler.events import Bus
from runtime.scheduler.store import Store
from runtime.specs import ExperimentSpec

SPEC = {"candidates": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}],
        "strategy": {"type": "epsilonGreedy", "updateIntervalMs": 200}}


class Hub:
    """What Adaptive uses of the scheduler (events.Hub), counting route publications."""

    def __init__(self, store: Store):
        self.store, self.bus = store, Bus()
        self.published: list[float] = []

    def spawn(self, coro) -> None:
        self.published.append(time.monotonic())
        coro.close()

    async def publish_routes(self, changed_model: str | None = None) -> bool:
        return True


def _adaptive(tmp_path) -> tuple[Adaptive, Hub]:
    hub = Hub(Store(tmp_path))
    adaptive = Adaptive(hub, wait_s=0.2)
    adaptive.learner("ab", ExperimentSpec.model_validate(SPEC))
    return adaptive, hub


def test_weights_follow_rewards_at_most_every_update_interval(tmp_path):
    adaptive, hub = _adaptive(tmp_path)

    async def feed() -> float:
        start = time.monotonic()
        for i in range(60):
            candidate = "b" if i % 2 else "a"
            adaptive.served_by("ab", f":{candidate}_1:", f"id-{i}")
            await adaptive.feedback("ab.experiment", f"id-{i}", float(candidate == "b"), None)
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # the last update due
        return time.monotonic() - start

    elapsed = asyncio.run(feed())
    assert adaptive.learners["ab"].weights == {"a": 10, "b": 90}
    gaps = [b - a for a, b in zip(hub.published, hub.published[1:], strict=False)]
    assert hub.published and len(hub.published) <= elapsed / 0.2 + 1
    assert all(g >= 0.19 for g in gaps), gaps

    again = Adaptive(hub)  # a restarted scheduler, same store
    learner = again.learner("ab", ExperimentSpec.model_validate(SPEC))
    assert learner.weights == {"a": 10, "b": 90}
    assert {n: (a.rewards, a.reward_sum) for n, a in learner.arms.items()} == \
        {"a": (30, 0.0), "b": (30, 30.0)}


def test_feedback_is_attributed_or_refused(tmp_path):
    adaptive, _ = _adaptive(tmp_path)
    adaptive.served_by("ab", ":zz_1:", "stale")  # not a candidate: ignored
    adaptive.served_by("nope", ":a_1:", "other")  # not an adaptive experiment: ignored
    adaptive.served_by("ab", ":a_3:", "ok")

    async def run():
        for rid in ("stale", "other"):
            with pytest.raises(FeedbackError, match=f"request_id: '{rid}' is not an answer"):
                await adaptive.feedback("ab.experiment", rid, 1.0, None)
        record = await adaptive.feedback("a", "ok", None, "bad")
        assert (record["candidate"], record["reward"]) == ("a", 0.0)
        with pytest.raises(FeedbackError, match="already has feedback") as err:
            await adaptive.feedback("a", "ok", 1.0, None)
        assert err.value.status == 409

    asyncio.run(run())
    assert json.dumps(adaptive.describe("ab"))  # the status detail is plain JSON


def test_only_adaptive_candidates_take_feedback_routes(tmp_path):
    """Envoy routes /feedback only under names of adaptive experiments' candidates (and the
    experiments' own routes), not under every model's."""
    adaptive, _ = _adaptive(tmp_path)
    assert adaptive.candidate_routes() == {"a", "b"}
    adaptive.forget("ab")
    assert adaptive.candidate_routes() == set()
