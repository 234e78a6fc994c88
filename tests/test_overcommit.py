"""Over-commit: more models placed on a replica than its memory holds; the agent evicts the
least recently used one and reloads it transparently on its next request."""

import itertools
import re
import urllib.request

from runtime.local.config import LocalServer
from tests.conftest import IRIS_CLASS


def _evictions(env) -> float:
    port = env.platform.replicas["small-0"]["agent_metrics"]
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return float(re.search(r"^seldon_cache_evict_count\{.*\} (\S+)$", text, re.M).group(1))


def test_three_models_on_an_overcommitted_server(make_env, sample_models):
    env = make_env([LocalServer(name="small", memory="1G", overCommitPercentage=10)])
    names = ["m1", "m2", "m3"]
    for name in names:  # 3 x 334 MB > 1 GB, but < 1.1 GB with 10 % over-commit
        env.load_model(name, sample_models / "iris", memory="334M")
    assert [s.state for s in env.scheduler.status("Model")] == ["ModelAvailable"] * 3

    for order in itertools.permutations(names):
        for name in order:
            status, body, _ = env.infer(name)
            assert status == 200, (name, body)
            assert body["model_name"] == f"{name}_1" and body["outputs"][0]["data"] == [
                IRIS_CLASS]
    assert _evictions(env) > 0  # the third model really did push another out

    # Over the over-commit allowance: refused with the reason, the others undisturbed.
    env.load_model("m4", sample_models / "iris", wait=False, memory="334M")
    [status] = env.scheduler.status("Model", "m4")
    assert status.state == "ScheduleFailed" and "free" in status.reason
    assert all(env.infer(n)[0] == 200 for n in names)
