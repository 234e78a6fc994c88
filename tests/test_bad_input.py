"""Bad input gets a 4xx with the OIP error body, and never disturbs what is loaded."""

import json
import subprocess
import sys

import pytest

from tests.conftest import IRIS_CLASS


@pytest.mark.parametrize("body, what", [
    (b'{"inputs": [{"name": "predict"', "malformed JSON"),
    (b'{"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FP32", '
     b'"data": [1.0, 2.0, 3.0]}]}', "data does not fill the shape"),
    (b'{"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "FOO", '
     b'"data": [1.0, 2.0, 3.0, 4.0]}]}', "unknown datatype"),
    (b'{"inputs": [{"name": "predict", "shape": [1, 4], "datatype": "BYTES", '
     b'"data": ["a", "b", "c", "d"]}]}', "datatype the model cannot take"),
    (b'{"outputs": []}', "no inputs"),
])
def test_bad_requests_get_oip_errors(iris_env, body, what):
    status, reply, _ = iris_env.infer("iris", body=body)
    assert 400 <= status < 500, (what, status, reply)
    assert isinstance(reply.get("error"), str) and reply["error"], (what, reply)
    assert "iris_1" not in reply["error"]  # internal names never show
    assert iris_env.predict("iris") == IRIS_CLASS


def test_unknown_model_is_404_with_error_body(iris_env):
    status, reply, _ = iris_env.infer("no-such-model")
    assert status == 404 and "error" in reply
    status, reply, _ = iris_env.infer("x", headers={"seldon-model": "no-such-model"},
                                      path="/v2/models/iris/infer")
    assert status == 404 and "error" in reply


def _cli(env, *args):
    return subprocess.run([sys.executable, "-m", "runtime.cli", "--scheduler",
                           env.platform.scheduler_address, *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("spec, field", [
    ({"storageUri": "/x", "replicas": -1}, "spec.replicas"),
    ({"storageUri": "/x", "memory": "lots"}, "spec.memory"),
    ({"storageUri": "/x", "requirments": ["sklearn"]}, "spec.requirments: unknown field"),
    ({"requirements": ["sklearn"]}, "spec.storageUri"),
])
def test_invalid_model_yaml_names_the_field(iris_env, tmp_path, spec, field):
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(json.dumps({"apiVersion": "mlops.seldon.io/v1alpha1", "kind": "Model",
                                    "metadata": {"name": "iris"}, "spec": spec}))
    out = _cli(iris_env, "model", "load", "-f", str(manifest))
    assert out.returncode != 0
    assert field in out.stderr and "Traceback" not in out.stderr, out.stderr
    [status] = iris_env.scheduler.status("Model", "iris")  # untouched: same version, serving
    assert (status.version, status.state) == (1, "ModelAvailable")
    assert iris_env.predict("iris") == IRIS_CLASS


def test_invalid_spec_refused_by_the_api_too(iris_env):
    from runtime.client import SchedulerError

    with pytest.raises(SchedulerError, match=r"spec\.replicas") as err:
        iris_env.scheduler.apply("Model", "iris", '{"storageUri": "/x", "replicas": -2}')
    assert err.value.invalid
    with pytest.raises(SchedulerError, match="name"):
        iris_env.scheduler.apply("Model", "Bad Name!", '{"storageUri": "/x"}')
    assert iris_env.predict("iris") == IRIS_CLASS
