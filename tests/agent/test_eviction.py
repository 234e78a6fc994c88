"""The agent's choice of what to evict under over-commit."""

from runtime.agent.models import Placed, Placements, State


def placements(*models: tuple[str, float, float | None], by_cost: bool = True) -> Placements:
    """(name, last used, load seconds) per loaded model, 100 bytes each."""
    p = Placements(capacity=10_000, by_cost=by_cost)
    for name, used, load in models:
        p.add(Placed(name=name, version=1, internal_name=name, memory=100,
                     state=State.LOADED, last_used=used, load_seconds=load))
    return p


def test_least_recently_used_when_reloads_cost_alike():
    p = placements(("a", 3, 0.010), ("b", 1, 0.018), ("c", 2, 0.008), ("d", 4, 0.011))
    assert p.victim(keep="x").name == "b"
    assert p.victim(keep="b").name == "c"


def test_a_model_dear_to_reload_stays_while_cheap_ones_go():
    # Six models called in turn, four fit: the dear one (0.5 s to load) was used longest ago.
    p = placements(("dear", 100, 0.500), ("light1", 101, 0.010), ("dear2", 102, 0.400),
                   ("light2", 103, 0.012))
    assert p.victim(keep="x").name == "light1"
    # ...but not for ever: half a second of reload is worth 29 s of recency here.
    p = placements(("dear", 100, 0.500), ("light1", 131, 0.010))
    assert p.victim(keep="x").name == "dear"
    # Plain LRU when asked for (--eviction lru).
    p = placements(("dear", 100, 0.500), ("light1", 101, 0.010), by_cost=False)
    assert p.victim(keep="x").name == "dear"


def test_unknown_reload_costs_add_nothing_and_nothing_loaded_is_none():
    p = placements(("restarted", 1, None), ("b", 2, 0.010), ("c", 3, 0.010), ("d", 4, 0.01))
    assert p.victim(keep="x").name == "restarted"
    p.models["restarted"].state = State.EVICTED
    assert p.victim(keep="b").name == "c"
    assert placements().victim(keep="x") is None


def test_the_reload_cost_is_the_fastest_reload_not_the_first_load():
    model = Placed(name="m", version=1, internal_name="m_1", memory=1)
    model.loaded_in(3.0)  # the first load imported scikit-learn
    assert model.load_seconds is None
    model.loaded_in(0.2)
    model.loaded_in(0.9)  # a busy moment
    assert model.load_seconds == 0.2
