"""Multi-armed bandit math of adaptive experiments: per-candidate reward statistics, the
traffic split each strategy makes of them, and the rule that names a winner. Pure (no I/O,
no clock); randomness comes from the caller's random.Random, so a seeded one repeats."""

import math
import random
from dataclasses import asdict, dataclass

import numpy as np

from runtime.specs.experiment import STRATEGY_TOTAL, Strategy

Z95 = 1.96              # two-sided 95% normal quantile (Wilson intervals)
THOMPSON_DRAWS = 2000   # posterior samples estimating P(candidate is best)
UCB_BATCH = STRATEGY_TOTAL  # virtual pulls UCB1 plays out to split the next interval
MIN_REWARDS = 30        # `promote --winner auto`: rewards every candidate needs first


@dataclass
class Arm:
    """One candidate's record: requests it served, feedback it got, and their sum."""

    pulls: int = 0
    rewards: int = 0
    reward_sum: float = 0.0

    def add(self, reward: float) -> None:
        self.rewards += 1
        self.reward_sum += reward

    @property
    def mean(self) -> float:
        return self.reward_sum / self.rewards if self.rewards else 0.0

    def interval(self) -> tuple[float, float]:
        """95% Wilson score interval of the mean reward (rewards are 0..1); (0, 1) if none."""
        n = self.rewards
        if not n:
            return 0.0, 1.0
        p, z2 = self.mean, Z95 * Z95
        centre = (p + z2 / (2 * n)) / (1 + z2 / n)
        half = Z95 * math.sqrt(max(p * (1 - p), 0.0) / n + z2 / (4 * n * n)) / (1 + z2 / n)
        return max(0.0, centre - half), min(1.0, centre + half)

    def to_doc(self) -> dict:
        return asdict(self)


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=lambda i: values[i])  # ties: the first candidate


def _epsilon_greedy(s: Strategy, arms: list[Arm]) -> list[float]:
    k = len(arms)
    best = _argmax([a.mean for a in arms])
    return [(1 - s.epsilon) * (i == best) + s.epsilon / k for i in range(k)]


def _ucb1(s: Strategy, arms: list[Arm]) -> list[float]:
    """UCB1 decides one pull at a time; a traffic split covers many. Play UCB_BATCH virtual
    pulls (each raises its arm's count, not its mean) and split by how many each arm got.
    Arms without feedback are tried first, as UCB1 plays every arm once."""
    untried = [a.rewards == 0 for a in arms]
    if any(untried):
        return [u / sum(untried) for u in untried]
    counts = [float(a.rewards) for a in arms]
    got = [0] * len(arms)
    for _ in range(UCB_BATCH):
        total = math.log(sum(counts))
        i = _argmax([a.mean + math.sqrt(s.exploration * total / n)
                     for a, n in zip(arms, counts, strict=True)])
        counts[i] += 1
        got[i] += 1
    return [g / UCB_BATCH for g in got]


def _thompson(arms: list[Arm], rng: random.Random) -> list[float]:
    """P(each arm is best) under Beta(1 + successes, 1 + failures) posteriors, estimated
    from THOMPSON_DRAWS joint samples (numpy: ~100x faster than random.betavariate, and
    this runs in the scheduler's event loop), seeded from `rng`."""
    draws = np.random.default_rng(rng.getrandbits(64)).beta(
        [1 + a.reward_sum for a in arms], [1 + a.rewards - a.reward_sum for a in arms],
        size=(THOMPSON_DRAWS, len(arms)))
    wins = np.bincount(draws.argmax(axis=1), minlength=len(arms))
    return [float(w) / THOMPSON_DRAWS for w in wins]


def shares(s: Strategy, arms: list[Arm], rng: random.Random) -> list[float]:
    """The strategy's split of traffic (adds up to 1), before minWeight. No feedback yet:
    an even split."""
    if not any(a.rewards for a in arms):
        return [1 / len(arms)] * len(arms)
    if s.type == "epsilonGreedy":
        return _epsilon_greedy(s, arms)
    if s.type == "ucb1":
        return _ucb1(s, arms)
    return _thompson(arms, rng)


def weights(s: Strategy, arms: list[Arm], rng: random.Random) -> list[int]:
    """Integer weights adding up to STRATEGY_TOTAL (percent), each at least s.minWeight:
    the floor keeps every candidate explored; the rest follows the strategy."""
    free = STRATEGY_TOTAL - s.minWeight * len(arms)
    raw = [s.minWeight + free * p for p in shares(s, arms, rng)]
    out = [math.floor(r) for r in raw]
    # largest remainder: the integers add up exactly
    for i in sorted(range(len(raw)), key=lambda i: out[i] - raw[i])[:STRATEGY_TOTAL - sum(out)]:
        out[i] += 1
    return out


def choose_winner(arms: dict[str, Arm], current: dict[str, int],
                  min_rewards: int = MIN_REWARDS) -> str:
    """The candidate to promote, or ValueError saying why the evidence is too thin. Rule:
    every candidate has at least `min_rewards` rewards; the strategy's favourite (highest
    current weight) has the highest mean reward; and its 95% interval lies wholly above
    every other candidate's."""
    thin = [f"{n} has {a.rewards}" for n, a in arms.items() if a.rewards < min_rewards]
    if thin:
        raise ValueError(f"too little feedback: {', '.join(thin)} reward(s); every candidate "
                         f"needs {min_rewards}")
    favourite = max(current, key=lambda n: current[n])
    leader = max(arms, key=lambda n: arms[n].mean)
    if leader != favourite:
        raise ValueError(f"the strategy still favours {favourite} (weight "
                         f"{current[favourite]}) while {leader} has the higher mean reward")
    low = arms[leader].interval()[0]
    for name, arm in arms.items():
        high = arm.interval()[1]
        if name != leader and high >= low:
            raise ValueError(
                f"not separated yet: {leader} {_describe(arms[leader])} overlaps {name} "
                f"{_describe(arm)} (95% intervals)")
    return leader


def _describe(arm: Arm) -> str:
    low, high = arm.interval()
    return f"{arm.mean:.3f} [{low:.3f}, {high:.3f}]"
