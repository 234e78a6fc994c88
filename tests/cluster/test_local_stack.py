"""`pulumi up -s local` by the real engine against a real `core2 up`: the dynamic providers
deploy the sample models, pipeline and experiment through the scheduler API, a second preview
shows no change, and destroy unloads them."""

import pytest

from runtime.client import SchedulerClient
from runtime.kinds import GONE

# several real engine runs, each planning a whole stack
pytestmark = pytest.mark.timeout(1800)
DEPLOYED = (("Model", "iris"), ("Model", "iris2"), ("Pipeline", "iris-pipeline"),
            ("Experiment", "iris-ab"))


def assert_deployed(scheduler: SchedulerClient) -> None:
    for kind, name in DEPLOYED:
        status = scheduler.get(kind, name)
        assert status is not None and status.ready, (kind, name, status)


def assert_models_gone(scheduler: SchedulerClient) -> None:
    for kind, name in DEPLOYED[:2]:
        status = scheduler.get(kind, name)
        assert status is None or status.state in GONE, (kind, name, status)


def test_local_stack_deploys_to_a_running_platform(stack_dir, make_env):
    env = make_env(pipelines=True)
    sd = stack_dir("local")
    sd.values["core2:schedulerAddress"] = env.platform.scheduler_address
    sd.save()

    sd.run("up").ok()
    scheduler = SchedulerClient(env.platform.scheduler_address)
    assert_deployed(scheduler)
    assert env.predict("iris") in (1, 2)  # through Envoy, split by the experiment

    sd.run("preview", "--expect-no-changes").ok()

    sd.run("destroy").ok()
    assert_models_gone(scheduler)


def test_a_moved_scheduler_is_used_for_update_and_destroy(stack_dir, make_env):
    """The stack's schedulerAddress changes (the platform moved): `up` re-applies the stack on
    the new scheduler and `destroy` removes it there; the address saved in the state (now
    dead) is never used."""
    old = make_env(pipelines=True)
    sd = stack_dir("local")
    sd.values["core2:schedulerAddress"] = old.platform.scheduler_address
    sd.save()
    sd.run("up").ok()
    old.platform.stop()

    new = make_env(pipelines=True)
    sd.values["core2:schedulerAddress"] = new.platform.scheduler_address
    sd.save()
    sd.run("up").ok()
    scheduler = SchedulerClient(new.platform.scheduler_address)
    assert_deployed(scheduler)

    sd.run("destroy").ok()
    assert_models_gone(scheduler)
