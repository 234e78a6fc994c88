"""The bandit math of adaptive experiments, deterministic: seeded generators, simulated
rewards (candidate B pays off more often than A)."""

import random

import pytest

from runtime.scheduler.bandit import Arm, choose_winner, weights
from runtime.specs import ExperimentSpec, SpecError
from runtime.specs.experiment import Strategy

STRATEGIES = ["epsilonGreedy", "thompson", "ucb1"]
PAYOFF = {"a": 0.3, "b": 0.7}   # chance that a request served by the candidate is rewarded


def simulate(strategy: Strategy, batches: int, per_batch: int = 100,
             seed: int = 7) -> tuple[list[int], dict[str, Arm]]:
    """Route `per_batch` requests by the current weights, reward each with its candidate's
    payoff, recompute (as the scheduler does every updateIntervalMs); the last weights."""
    traffic, rewards, strategy_rng = random.Random(seed), random.Random(seed + 1), \
        random.Random(seed + 2)
    arms = {n: Arm() for n in PAYOFF}
    current = weights(strategy, list(arms.values()), strategy_rng)
    for _ in range(batches):
        for name in traffic.choices(list(arms), weights=current, k=per_batch):
            arms[name].pulls += 1
            arms[name].add(1.0 if rewards.random() < PAYOFF[name] else 0.0)
        current = weights(strategy, list(arms.values()), strategy_rng)
    return current, arms


@pytest.mark.parametrize("kind", STRATEGIES)
def test_better_candidate_gets_at_least_80_percent(kind):
    current, arms = simulate(Strategy(type=kind), batches=20)  # 2000 requests
    assert current[1] >= 80, (current, arms)
    assert sum(current) == 100 and min(current) >= 5  # minWeight keeps exploring


@pytest.mark.parametrize("kind", STRATEGIES)
def test_same_seed_same_weights(kind):
    assert simulate(Strategy(type=kind), 5) == simulate(Strategy(type=kind), 5)


@pytest.mark.parametrize("kind", STRATEGIES)
def test_no_feedback_splits_evenly(kind):
    assert weights(Strategy(type=kind, seed=1), [Arm(), Arm()], random.Random(1)) == [50, 50]


@pytest.mark.parametrize("kind", STRATEGIES)
def test_min_weight_is_a_floor(kind):
    arms = [Arm(rewards=500, reward_sum=5), Arm(rewards=500, reward_sum=495), Arm(1, 1, 0)]
    out = weights(Strategy(type=kind, minWeight=10), arms, random.Random(3))
    assert sum(out) == 100 and min(out) >= 10, out
    out = weights(Strategy(type=kind, minWeight=0), arms[:2], random.Random(3))
    assert sum(out) == 100 and out[1] >= 90, out


def test_interval_narrows_with_evidence():
    few, many = Arm(rewards=10, reward_sum=7), Arm(rewards=1000, reward_sum=700)
    assert few.interval()[0] < many.interval()[0] < 0.7 < many.interval()[1] < few.interval()[1]
    assert Arm().interval() == (0.0, 1.0)


def test_winner_needs_enough_separated_evidence():
    b = Arm(rewards=400, reward_sum=280)
    with pytest.raises(ValueError, match="a has 12 reward"):
        choose_winner({"a": Arm(rewards=12, reward_sum=4), "b": b}, {"a": 5, "b": 95})
    close = {"a": Arm(rewards=40, reward_sum=26), "b": b}
    with pytest.raises(ValueError, match=r"not separated yet: b 0\.700"):
        choose_winner(close, {"a": 5, "b": 95})
    clear = {"a": Arm(rewards=60, reward_sum=18), "b": b}
    with pytest.raises(ValueError, match="still favours a"):
        choose_winner(clear, {"a": 95, "b": 5})
    assert choose_winner(clear, {"a": 5, "b": 95}) == "b"


@pytest.mark.parametrize("strategy, message", [
    ({"type": "greedy"}, "strategy.type"),
    ({"type": "ucb1", "minWeight": 40}, "strategy.minWeight: 40% for each of 3"),
    ({"type": "thompson", "updateIntervalMs": 5}, "strategy.updateIntervalMs"),
    ({"type": "thompson", "labelRewards": {"ok": 2}}, "labelRewards.ok"),
    ({"type": "thompson", "epsilon": 0.1, "alpha": 1}, "strategy.alpha: unknown field"),
])
def test_bad_strategies_are_refused(strategy, message):
    spec = {"candidates": [{"name": n, "weight": 1} for n in ("a", "b", "c")],
            "strategy": strategy}
    with pytest.raises(SpecError, match=message):
        ExperimentSpec.parse(spec)


def test_a_strategy_needs_two_candidates():
    with pytest.raises(SpecError, match="strategy: needs at least two candidates"):
        ExperimentSpec.parse({"candidates": [{"name": "a", "weight": 1}],
                              "strategy": {"type": "ucb1"}})
