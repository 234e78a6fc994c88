"""The model autoscaler's decisions, without processes: hysteresis, cool-downs, min/max
clamps, the agent's in-flight arithmetic, and the settings' validation."""

import pytest
from pydantic import ValidationError

from runtime.agent.load import LoadMeter
from runtime.local.config import LocalConfig
from runtime.scheduler.autoscale import AutoscaleConfig, LoadBook, ModelScaler
from runtime.scheduler.models import ModelManager
from runtime.scheduler.state import ModelVersion
from runtime.specs.common import SpecError
from runtime.specs.model import ModelSpec

CFG = AutoscaleConfig(scaleUpInFlight=1.0, scaleDownInFlight=0.25,
                      scaleUpCooldownSeconds=10, scaleDownDelaySeconds=30)


def _run(scaler: ModelScaler, current: int, loads: list[tuple[float, float]],
         floor: int = 1, ceiling: int = 3) -> list[tuple[float, int]]:
    """Feed (time, in flight) looks; apply each decision; return (time, replicas) changes."""
    changes = []
    for now, in_flight in loads:
        d = scaler.decide(current, floor, ceiling, in_flight, now, CFG)
        if d is not None:
            scaler.changed(now)
            current = d.replicas
            changes.append((now, current))
    return changes


def test_scales_up_one_replica_per_cooldown_and_stops_at_max():
    looks = [(t, 5.0) for t in range(0, 60)]  # heavy load for a minute, a look a second
    assert _run(ModelScaler(), 1, looks) == [(0, 2), (10, 3)]


def test_a_load_between_the_watermarks_changes_nothing():
    # 2 replicas carrying 1.5: 0.75 each is below 1.0 (no scale-up), and on one replica
    # it would be 1.5, above 0.25 (no scale-down): the band where nothing flaps
    assert _run(ModelScaler(), 2, [(t, 1.5) for t in range(0, 120)]) == []


def test_scales_down_only_after_the_load_stayed_low_for_the_delay():
    scaler = ModelScaler()
    looks = [(t, 0.0) for t in range(0, 29)] + [(29, 0.9)]  # a burst just before the delay
    looks += [(t, 0.0) for t in range(30, 100)]
    # the burst (0.9 on 2 replicas: above 0.25 each) resets the quiet time: down at 30+30
    assert _run(scaler, 3, looks) == [(60, 2), (90, 1)]


def test_clamps_to_min_and_max_at_once():
    d = ModelScaler().decide(1, 2, 4, 0.0, 0.0, CFG)
    assert (d.replicas, d.direction) == (2, "up") and "minReplicas" in d.reason
    d = ModelScaler().decide(5, 1, 3, 9.0, 0.0, CFG)
    assert (d.replicas, d.direction) == (3, "down") and "maxReplicas" in d.reason


def test_never_below_the_floor_or_above_the_ceiling():
    assert _run(ModelScaler(), 1, [(t, 0.0) for t in range(0, 200)]) == []
    assert _run(ModelScaler(), 3, [(t, 50.0) for t in range(0, 200)]) == []


def test_the_reason_names_the_load():
    d = ModelScaler().decide(1, 1, 3, 2.5, 0.0, CFG)
    assert d.reason == "2.50 requests in flight on 1 replica(s), above 1 each"


def test_load_book_counts_fresh_reports_of_the_replicas_asked_only():
    book = LoadBook()
    book.note("iris_1", "s/0", 1.0, 10, at=100)
    book.note("iris_1", "s/1", 2.0, 20, at=95)
    book.note("iris_1", "s/2", 4.0, 40, at=80)   # stale at 100 with a 10 s limit
    assert book.total("iris_1", {"s/0", "s/1", "s/2"}, 100, 10) == (3.0, 30, 2)
    assert book.total("iris_1", {"s/0"}, 100, 10) == (1.0, 10, 1)


def test_load_meter_turns_summed_seconds_into_requests_in_flight():
    meter = LoadMeter()
    totals = {"iris_1": {"seconds": 10.0, "success": 100.0, "failure": 0.0}}
    assert meter.rates(totals, ["iris_1"], now=0.0) == (0.0, {"iris_1": (0.0, 0.0)})
    # 2 s later: 3 more inference-seconds over 2 s = 1.5 in flight; 40 requests = 20/s
    totals = {"iris_1": {"seconds": 13.0, "success": 139.0, "failure": 1.0}}
    assert meter.rates(totals, ["iris_1"], now=2.0) == (2.0, {"iris_1": (1.5, 20.0)})
    # a model first seen now counts as idle, not as its whole history
    totals["iris2_1"] = {"seconds": 500.0, "success": 9000.0}
    assert meter.rates(totals, ["iris_1", "iris2_1"], now=4.0)[1]["iris2_1"] == (0.0, 0.0)


def test_settings_refuse_watermarks_that_would_flap():
    with pytest.raises(ValidationError, match="must be below scaleUpInFlight"):
        AutoscaleConfig(scaleUpInFlight=0.5, scaleDownInFlight=0.5)


def test_a_model_autoscales_only_with_room_between_min_and_max():
    spec = {"storageUri": "x"}
    assert ModelSpec(**spec, minReplicas=1, maxReplicas=3).autoscaled
    assert not ModelSpec(**spec, minReplicas=2, maxReplicas=2).autoscaled
    assert not ModelSpec(**spec, replicas=2).autoscaled
    assert ModelSpec(**spec, maxReplicas=2).scale_floor == 1


def test_a_bad_local_setting_is_named(tmp_path):
    path = tmp_path / "local.yaml"
    path.write_text("autoscaling: {scaleUpInFlight: -1, bogus: 1}\n")
    with pytest.raises(SpecError) as e:
        LocalConfig.load(path)
    assert "autoscaling.scaleUpInFlight: Input should be greater than 0" in str(e.value)
    assert "autoscaling.bogus: unknown field" in str(e.value)


def test_the_autoscalers_choice_survives_a_scheduler_restart():
    v = ModelVersion("iris", 1, ModelSpec(storageUri="x", minReplicas=1, maxReplicas=3),
                     scaled=3, scale_reason="up: load")
    back = ModelVersion.from_doc("iris", v.to_doc())
    assert (back.scaled, back.scale_reason) == (3, "up: load")
    assert ModelManager.want(back) == 3
    back.spec = ModelSpec(storageUri="x", minReplicas=1, maxReplicas=2)  # max lowered
    assert ModelManager.want(back) == 2
