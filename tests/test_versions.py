"""Model versions: a spec change makes a new version; replicas alone scale the current one;
a version that fails to load leaves the previous one serving."""

import json

from runtime.local.config import LocalServer
from tests.conftest import IRIS2_CLASS, IRIS_CLASS


def test_failed_new_version_leaves_old_one_serving(make_env, sample_models, tmp_path):
    env = make_env()
    env.load_model("iris", sample_models / "iris")
    env.load_model("iris", tmp_path / "no-such-artifact", wait=False)
    [status] = env.scheduler.status("Model", "iris")
    assert status.version == 2
    for _ in range(100):
        [status] = env.scheduler.status("Model", "iris")
        if status.state == "ModelFailed":
            break
        assert env.predict("iris") == IRIS_CLASS  # v1 serves while v2 tries
    assert status.state == "ModelFailed"
    assert "version 2" in status.reason and "version 1 still serving" in status.reason
    assert [v.state for v in status.versions] == ["ModelFailed", "ModelAvailable"]
    assert env.predict("iris") == IRIS_CLASS

    # A good version 3 replaces version 1.
    env.load_model("iris", sample_models / "iris2")
    assert env.predict("iris") == IRIS2_CLASS
    [status] = env.scheduler.status("Model", "iris")
    assert status.version == 3


def test_replicas_alone_scale_the_current_version(make_env, sample_models):
    env = make_env([LocalServer(name="mlserver", replicas=2)])
    env.load_model("iris", sample_models / "iris", replicas=1)
    env.load_model("iris", sample_models / "iris", replicas=2)
    [status] = env.scheduler.status("Model", "iris")
    assert status.version == 1 and status.versions[0].available_replicas == 2
    server = json.loads(env.scheduler.status("Server", "mlserver")[0].detail_json)
    assert [r["models"] for r in server["replicas"]] == [["iris_1"], ["iris_1"]]
    assert {env.predict("iris") for _ in range(20)} == {IRIS_CLASS}
    env.load_model("iris", sample_models / "iris", replicas=1)
    [status] = env.scheduler.status("Model", "iris")
    assert status.version == 1 and status.versions[0].available_replicas == 1
