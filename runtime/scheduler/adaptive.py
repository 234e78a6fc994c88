"""Learned state of adaptive experiments (spec.strategy): which candidate served each recent
request (told by Envoy's access log, runtime.scheduler.feedback), the rewards fed back for
them, and the weights recomputed from those at most every updateIntervalMs. Kept in the
scheduler's store, so a restart keeps what was learned."""

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client import Counter, Gauge

from runtime.scheduler import bandit
from runtime.scheduler.events import ExperimentChanged, Hub
from runtime.specs import ExperimentSpec
from runtime.specs.experiment import Strategy

log = logging.getLogger(__name__)
KEY = "bandit"  # store kind: one document per adaptive experiment
PIPELINE_SUFFIX = ".pipeline"

PULLS = Counter("seldon_experiment_pulls", "Requests an adaptive experiment routed, by "
                "candidate", ["experiment", "candidate"])
FEEDBACK = Counter("seldon_experiment_feedback", "Feedback taken, by candidate (label: the "
                   "label sent, or 'reward')", ["experiment", "candidate", "label"])
REWARD = Counter("seldon_experiment_reward", "Sum of the rewards taken, by candidate",
                 ["experiment", "candidate"])
WEIGHT = Gauge("seldon_experiment_weight", "Current weight (percent) of each candidate of an "
               "adaptive experiment", ["experiment", "candidate"])
REFUSED = Counter("seldon_experiment_feedback_refused", "Feedback refused, by HTTP status",
                  ["status"])


class FeedbackError(Exception):
    """Feedback refused: `status` is the HTTP status, the message names the field."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass
class Served:
    experiment: str
    candidate: str
    rated: bool = False


@dataclass
class Learner:
    """One adaptive experiment: its candidates' arms and current weights."""

    strategy: Strategy
    spec: ExperimentSpec  # the experiment's, as last routed
    arms: dict[str, bandit.Arm]
    weights: dict[str, int]
    rng: random.Random
    pipeline: bool = False
    last_update: float = -1e9
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    # x-seldon-route value -> candidate (None: not one), filled as Envoy's log names them:
    # each access log entry then costs a dict lookup
    labels: dict[str, str | None] = field(default_factory=dict, repr=False)

    def candidate(self, route_label: str) -> str | None:
        if (found := self.labels.get(route_label, "")) != "":
            return found
        if len(self.labels) > 1000:  # labels of versions long gone
            self.labels.clear()
        found = self.labels[route_label] = candidate_of(route_label, set(self.arms),
                                                        self.pipeline)
        return found

    def to_doc(self) -> dict:
        return {"arms": {n: a.to_doc() for n, a in self.arms.items()}, "weights": self.weights}


def candidate_of(route_label: str, candidates: set[str], pipeline: bool) -> str | None:
    """The candidate an `x-seldon-route` value names (":iris_2:" -> "iris",
    ":chain.pipeline:" -> "chain"), if it is one of `candidates`."""
    label = route_label.strip().strip(":")
    if pipeline:
        name = label.removesuffix(PIPELINE_SUFFIX) if label.endswith(PIPELINE_SUFFIX) else None
    else:
        name = label.rpartition("_")[0]  # internal names are <model>_<version>
    return name if name in candidates else None


class Adaptive:
    """The adaptive experiments of a scheduler (`hub`). `remember`: how many recent request
    ids are kept for attribution; `wait_s`: how long feedback for an id not seen yet waits for
    Envoy's access log (which Envoy sends in batches) before it is refused."""

    def __init__(self, hub: Hub, remember: int = 100_000, wait_s: float = 3.0):
        self.hub, self.remember, self.wait_s = hub, remember, wait_s
        self.served: OrderedDict[str, Served] = OrderedDict()
        self._waiting: dict[str, asyncio.Event] = {}
        self.learners: dict[str, Learner] = {}
        self._saved = hub.store.all(KEY)
        self.publish: Callable[[dict], None] | None = None  # the feedback topic, if any

    # ---- routing ---------------------------------------------------------------------------
    def learner(self, name: str, spec: ExperimentSpec) -> Learner | None:
        """The experiment's learner, following its spec (candidates added or gone, strategy
        changed); None without a strategy."""
        if spec.strategy is None:
            self.forget(name)
            return None
        names = [c.name for c in spec.candidates]
        current = self.learners.get(name)
        if current and current.strategy == spec.strategy and list(current.arms) == names:
            current.spec = spec
            return current
        saved = current.to_doc() if current else self._saved.pop(name, {})
        arms = {n: bandit.Arm(**saved.get("arms", {}).get(n, {})) for n in names}
        learner = Learner(spec.strategy, spec, arms, {}, random.Random(spec.strategy.seed),
                          pipeline=spec.resourceType == "pipeline")
        kept = saved.get("weights", {})
        if current is None and set(kept) == set(names):  # as learned before a restart
            learner.weights = {n: kept[n] for n in names}
            for candidate, w in learner.weights.items():
                WEIGHT.labels(name, candidate).set(w)
        else:
            self._recompute(name, learner)
        if current and current.timer:
            current.timer.cancel()
        self.learners[name] = learner
        return learner

    def weights(self, name: str, spec: ExperimentSpec) -> dict[str, int] | None:
        learner = self.learner(name, spec)
        return learner.weights if learner else None

    def candidate_routes(self) -> set[str]:
        """The route names of adaptive experiments' candidates (`iris`, `chain.pipeline`): a
        client may send feedback under the name of the one that answered."""
        return {c + (PIPELINE_SUFFIX if learner.pipeline else "")
                for learner in self.learners.values() for c in learner.arms}

    def forget(self, name: str) -> None:
        learner = self.learners.pop(name, None)
        if learner and learner.timer:
            learner.timer.cancel()
        if learner or name in self._saved:
            self._saved.pop(name, None)
            self.hub.store.delete(KEY, name)

    def _recompute(self, name: str, learner: Learner) -> bool:
        """New weights from the rewards so far; True if they changed."""
        learner.timer, learner.last_update = None, time.monotonic()
        new = dict(zip(learner.arms, bandit.weights(learner.strategy, list(
            learner.arms.values()), learner.rng), strict=True))
        changed, learner.weights = new != learner.weights, new
        for candidate, w in new.items():
            WEIGHT.labels(name, candidate).set(w)
        self.hub.store.put(KEY, name, learner.to_doc())
        return changed

    def _update_later(self, name: str, learner: Learner) -> None:
        """Recompute once updateIntervalMs has passed since the last time (bounded rate)."""
        if learner.timer is not None:
            return
        due = learner.last_update + learner.strategy.updateIntervalMs / 1000 - time.monotonic()
        learner.timer = asyncio.get_running_loop().call_later(max(0.0, due), self._update,
                                                              name, learner)

    def _update(self, name: str, learner: Learner) -> None:
        if self.learners.get(name) is not learner:
            return
        if self._recompute(name, learner):
            self.hub.bus.publish(ExperimentChanged(name))
            self.hub.spawn(self.hub.publish_routes())

    # ---- what Envoy served -----------------------------------------------------------------
    def served_by(self, experiment: str, route_label: str, request_id: str) -> None:
        """Envoy's access log: `request_id` was answered by the candidate `route_label`
        names. Entries for anything else (a stale route, a failed request) are ignored."""
        learner = self.learners.get(experiment)
        if learner is None or not request_id:
            return
        candidate = learner.candidate(route_label)
        if candidate is None:
            return
        learner.arms[candidate].pulls += 1
        PULLS.labels(experiment, candidate).inc()
        self.served[request_id] = Served(experiment, candidate)
        if len(self.served) > self.remember:
            self.served.popitem(last=False)
        if (event := self._waiting.get(request_id)) is not None:
            event.set()

    async def _lookup(self, request_id: str) -> Served:
        if request_id not in self.served:  # its log entry may still be on its way
            event = self._waiting.setdefault(request_id, asyncio.Event())
            try:
                await asyncio.wait_for(event.wait(), self.wait_s)
            except TimeoutError:
                pass
            finally:
                self._waiting.pop(request_id, None)
        if (served := self.served.get(request_id)) is None:
            raise FeedbackError(404, f"request_id: {request_id!r} is not an answer of an "
                                     f"adaptive experiment (the last {self.remember} are "
                                     "kept)")
        return served

    # ---- feedback --------------------------------------------------------------------------
    async def feedback(self, called: str, request_id: str, reward: float | None,
                       label: str | None) -> dict:
        """Take a reward (or a label) for the answer to `request_id`; `called` is the name
        the feedback was sent to (seldon-model: a model, `<p>.pipeline` or
        `<e>.experiment`), which must be the one that routed it."""
        try:
            served = await self._lookup(request_id)
            learner = self.learners.get(served.experiment)  # (forgotten when it is deleted)
            if learner is None:
                raise FeedbackError(404, f"request_id: {request_id!r} was answered by "
                                         f"experiment {served.experiment!r}, which has ended")
            if called not in _names(served.experiment, learner.spec):
                raise FeedbackError(400, f"request_id: {request_id!r} was answered by "
                                         f"experiment {served.experiment!r}, not by {called!r}")
            if served.rated:
                raise FeedbackError(409, f"request_id: {request_id!r} already has feedback")
            if label is not None:
                if label not in learner.strategy.labelRewards:
                    known = ", ".join(sorted(learner.strategy.labelRewards))
                    raise FeedbackError(400, f"label: {label!r} is not one of the "
                                             f"experiment's labelRewards ({known})")
                reward = learner.strategy.labelRewards[label]
            if reward is None:
                raise FeedbackError(400, "reward or label: give one")
        except FeedbackError as e:
            REFUSED.labels(str(e.status)).inc()
            raise
        served.rated = True
        learner.arms[served.candidate].add(reward)
        FEEDBACK.labels(served.experiment, served.candidate, label or "reward").inc()
        REWARD.labels(served.experiment, served.candidate).inc(reward)
        self.hub.store.put(KEY, served.experiment, learner.to_doc())
        record = {"requestId": request_id, "experiment": served.experiment,
                  "candidate": served.candidate, "reward": reward, "label": label,
                  "called": called, "unixMs": int(time.time() * 1000)}
        if self.publish is not None:
            self.publish(record)
        self._update_later(served.experiment, learner)
        return record

    # ---- status ----------------------------------------------------------------------------
    def describe(self, name: str) -> dict[str, dict] | None:
        """Per candidate: pulls, rewards, mean reward with its 95% interval, weight."""
        learner = self.learners.get(name)
        if learner is None:
            return None
        out = {}
        for candidate, arm in learner.arms.items():
            low, high = arm.interval()
            out[candidate] = {"pulls": arm.pulls, "rewards": arm.rewards,
                              "meanReward": round(arm.mean, 6),
                              "interval": [round(low, 6), round(high, 6)],
                              "weight": learner.weights.get(candidate, 0)}
        return out


def _names(experiment: str, spec: ExperimentSpec) -> set[str]:
    """The seldon-model names that reach an experiment: its own, its default's, and its
    candidates' (the client may rate an answer under the name of the model that gave it)."""
    suffix = PIPELINE_SUFFIX if spec.resourceType == "pipeline" else ""
    names = {f"{experiment}.experiment"} | {c.name + suffix for c in spec.candidates}
    if spec.default:
        names.add(spec.default + suffix)
    return names
