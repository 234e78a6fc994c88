"""Placement's named rules (fast layer; the real processes are in test_placement.py): a
ScheduleFailed reason names, for each candidate server, the rule it failed and why, in
words and quantities a user reads; sorters keep their order."""

import pytest

from runtime.scheduler.placement import FILTERS, PlacementError, place, quantity
from runtime.scheduler.state import Replica

MI, GI = 2**20, 2**30


def _replica(server: str, idx: int, caps=("sklearn",), memory: int = GI, over_commit: int = 0,
             draining: bool = False) -> Replica:
    return Replica(server, idx, list(caps), memory, over_commit, "127.0.0.1", 1, 2, 3, 4,
                   connected=True, draining=draining)


def _refusal(replicas: list[Replica], **ask) -> str:
    args = {"requirements": ["sklearn"], "memory": MI, "want": 1, "minimum": 1,
            "pinned": None, "used": {}, "holding": set()} | ask
    with pytest.raises(PlacementError) as e:
        place(replicas=replicas, **args)
    return str(e.value)


def test_rules_are_named_and_in_order():
    assert [r.name for r in FILTERS] == ["requirements", "replicas", "memory"]


def test_a_requirement_no_server_offers_names_each_server_and_what_it_lacks():
    reason = _refusal([_replica("a", 0), _replica("b", 0, caps=("sklearn", "gpu"))],
                      requirements=["sklearn", "tpu"])
    assert reason == ("no server offers requirement(s) sklearn, tpu (server a [requirements]: "
                      "lacks tpu; server b [requirements]: lacks tpu)")


def test_too_few_replicas_counts_them_and_the_draining_ones():
    reason = _refusal([_replica("s", 0), _replica("s", 1, draining=True)], want=2, minimum=2)
    assert reason == "server s [replicas]: 1 of 2 replica(s) needed connected (1 draining)"


def test_not_enough_memory_says_what_is_free_after_over_commit_and_what_is_needed():
    # 1000Mi with 0% over-commit and 100Mi placed: 900Mi free, 1Gi needed
    reason = _refusal([_replica("s", 0, memory=1000 * MI)], memory=GI, used={"s/0": 100 * MI})
    assert reason == ("server s [memory]: not enough memory: 0 of 1 replica(s) needed have "
                      "1Gi free after over-commit (most free: 900Mi)")
    # over-commit counts: 1000Mi + 10% fits 1Gi
    assert place(requirements=["sklearn"], memory=GI, want=1, minimum=1, pinned=None,
                 replicas=[_replica("s", 0, memory=1000 * MI, over_commit=10)], used={},
                 holding=set()).server == "s"


def test_each_server_is_refused_by_the_first_rule_it_fails():
    reason = _refusal([_replica("a", 0, caps=("triton",)), _replica("b", 0, memory=512 * MI)],
                      memory=GI)
    assert reason == ("server a [requirements]: lacks sklearn; server b [memory]: not enough "
                      "memory: 0 of 1 replica(s) needed have 1Gi free after over-commit "
                      "(most free: 512Mi)")


def test_a_pinned_server_or_no_server_at_all():
    assert _refusal([_replica("a", 0)], pinned="b") == "server 'b' has no connected replica"
    assert _refusal([_replica("a", 0, draining=True)]) == \
        "no server replica is connected that is not draining (1 draining)"


def test_sorters_prefer_the_holding_server_then_free_memory_and_keep_serving_copies():
    replicas = [_replica("a", 0, memory=2 * GI), _replica("b", 0), _replica("b", 1),
                _replica("b", 2, memory=2 * GI)]
    ask = {"requirements": ["sklearn"], "memory": MI, "minimum": 1, "pinned": None, "used": {}}
    assert place(replicas=replicas, want=1, holding=set(), **ask).server == "a"  # most free
    held = place(replicas=replicas, want=2, holding={"b"}, loaded_on={"b/1"}, **ask)
    assert (held.server, held.replicas) == ("b", [1, 2])  # serving b/1 kept, then most free
    partial = place(replicas=replicas, want=5, holding={"b"}, **ask)
    assert (partial.server, partial.replicas, partial.partial) == ("b", [0, 1, 2], True)


def test_quantities_read_like_kubernetes():
    assert [quantity(n) for n in (900 * MI, GI, 3 * GI // 2, 64 * MI)] == \
        ["900Mi", "1Gi", "1.5Gi", "64Mi"]
