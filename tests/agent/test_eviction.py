"""The agent's choice of what to evict under over-commit."""

from runtime.agent.models import Placed, Placements, State


def placements(*models: tuple[str, float, float | None]) -> Placements:
    """(name, last used, load seconds) per loaded model, 100 bytes each."""
    p = Placements(capacity=10_000)
    for name, used, load in models:
        p.add(Placed(name=name, version=1, internal_name=name, memory=100,
                     state=State.LOADED, last_used=used, load_seconds=load))
    return p


def test_least_recently_used_when_reloads_cost_alike():
    p = placements(("a", 3, 0.010), ("b", 1, 0.012), ("c", 2, 0.008), ("d", 4, 0.011))
    assert p.victim(keep="x").name == "b"
    assert p.victim(keep="b").name == "c"


def test_a_much_cheaper_reload_among_the_older_half_goes_first():
    p = placements(("heavy", 1, 0.400), ("light", 2, 0.010), ("new", 3, 0.001),
                   ("newer", 4, 0.001))
    assert p.victim(keep="x").name == "light"  # heavy stays: 40x dearer to bring back
    # Recently used models are kept however cheap they are.
    p = placements(("heavy", 1, 0.400), ("heavy2", 2, 0.300), ("new", 3, 0.001),
                   ("newer", 4, 0.001))
    assert p.victim(keep="x").name == "heavy"


def test_unknown_reload_costs_count_as_typical_and_nothing_loaded_is_none():
    p = placements(("restarted", 1, None), ("b", 2, 0.010), ("c", 3, 0.010), ("d", 4, 0.01))
    assert p.victim(keep="x").name == "restarted"
    p.models["restarted"].state = State.EVICTED
    assert placements().victim(keep="x") is None
    assert p.victim(keep="b").name == "c"
