"""The flat load path: MLServer finds a model by its folder name (not by reading every
model-settings.json), a load costs the same with 200 models in the server as with one, and a
slow load does not stop inference on the models already loaded."""

import json
import statistics
import threading
import time

import httpx

from runtime.agent import modelsettings
from runtime.specs.model import ModelSpec

from .conftest import PROBE_CLASS, infer

SKLEARN = ModelSpec(storageUri="/models/iris", requirements=["sklearn"])


def write(repository, name: str, artifact) -> None:
    modelsettings.write_model(repository, name, SKLEARN, artifact,
                              {"name": name, "version": 1, "memory": 0})


def load(server, name: str, timeout: float = 60) -> float:
    start = time.perf_counter()
    r = httpx.post(f"{server.url}/v2/repository/models/{name}/load", timeout=timeout)
    assert r.status_code == 200, r.text
    return time.perf_counter() - start


def index(server) -> dict[str, str]:
    entries = httpx.post(f"{server.url}/v2/repository/index", json={}).json()
    return {m["name"]: m["state"] for m in entries}


def test_models_are_found_by_folder_and_the_index_follows_the_folders(model_server,
                                                                       iris_artifact):
    repository = model_server.repository
    write(repository, "a_1", iris_artifact)
    write(repository, "b_1", iris_artifact)
    load(model_server, "a_1")
    assert index(model_server) == {"a_1": "READY", "b_1": "UNAVAILABLE"}

    # A folder named otherwise (a hand-made repository) is still found, by MLServer's scan.
    (repository / "odd").mkdir()
    (repository / "odd" / "model-settings.json").write_text(json.dumps(
        {"name": "c_1", "implementation": "mlserver_sklearn.SKLearnModel",
         "parameters": {"uri": str(iris_artifact / "model.joblib")}}))
    load(model_server, "c_1")
    for missing in ("nope_1", "..", "odd"):
        r = httpx.post(f"{model_server.url}/v2/repository/models/{missing}/load")
        assert r.status_code in (400, 404), (missing, r.text)

    modelsettings.remove_model(repository, "b_1")
    assert index(model_server) == {"a_1": "READY", "c_1": "READY"}
    r = infer(model_server.url, "c", "c_1")
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [PROBE_CLASS]


def test_a_load_at_200_models_costs_what_the_first_did(model_server, iris_artifact):
    repository = model_server.repository
    names = [f"m{i:03d}_1" for i in range(200)]
    write(repository, "warm_1", iris_artifact)
    load(model_server, "warm_1")  # the first load imports scikit-learn
    early = []
    for name in names[:10]:
        write(repository, name, iris_artifact)
        early.append(load(model_server, name))
    for name in names[10:190]:
        write(repository, name, iris_artifact)
        load(model_server, name)
    late = []
    for name in names[190:]:
        write(repository, name, iris_artifact)
        late.append(load(model_server, name))
    # MLServer's own repository reads every model-settings.json per load: ~20x here.
    assert statistics.median(late) <= 2 * statistics.median(early) + 0.01, (early, late)
    assert len(model_server.held()) == 201
    r = infer(model_server.url, "m", names[-1])
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [PROBE_CLASS]


SLOW_RUNTIME = """
import time
from mlserver import MLModel


class Slow(MLModel):
    async def load(self):
        time.sleep(3)  # blocking work, as joblib.load or reading weights is
        return True
"""


def test_a_slow_load_does_not_stop_inference(model_server, iris_artifact):
    repository = model_server.repository
    write(repository, "iris_1", iris_artifact)
    load(model_server, "iris_1")
    slow = repository / "slow_1"
    slow.mkdir()
    (slow / "slow_runtime.py").write_text(SLOW_RUNTIME)
    (slow / "model-settings.json").write_text(json.dumps(
        {"name": "slow_1", "implementation": "slow_runtime.Slow"}))

    loading = threading.Thread(target=load, args=(model_server, "slow_1"))
    loading.start()
    try:
        time.sleep(0.5)  # the slow load is under way
        start = time.perf_counter()
        for _ in range(5):
            r = infer(model_server.url, "iris", "iris_1")
            assert r.status_code == 200, r.text
        assert time.perf_counter() - start < 1.5  # answered while the load sleeps
        assert loading.is_alive()
    finally:
        loading.join(30)
    assert "slow_1" in model_server.held()
