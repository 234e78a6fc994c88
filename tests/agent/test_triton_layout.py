"""How the agent lays a Triton model folder out in Triton's repository."""

import json

import pytest

from runtime.agent.modelsettings import SettingsError, read_records
from runtime.agent.triton_layout import BOOT_FILE, CONFIG_FILE, write_model

ONNX = 'name: "simple"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 8\n'
PYTHON = ('name: "adder"\nbackend: "python"\ndefault_model_filename: "adder.py"\n'
          'input [ { name: "X", data_type: TYPE_INT32, dims: [ 1 ] } ]\n')


def artifact(tmp_path, config: str | None, versions=("1", "3"), files=("model.onnx",)):
    folder = tmp_path / "artifact"
    folder.mkdir()
    if config is not None:
        (folder / CONFIG_FILE).write_text(config)
    for v in versions:
        (folder / v).mkdir()
        for f in files:
            (folder / v / f).write_text(v)
    (folder / "labels.txt").write_text("a\nb\n")
    return folder


def test_the_newest_version_is_served_under_the_internal_name_and_core2s_version(tmp_path):
    repo = tmp_path / "repo"
    folder = write_model(repo, "simple_2", 2, artifact(tmp_path, ONNX), {"name": "simple"})
    assert (folder / CONFIG_FILE).read_text().splitlines()[:2] == [
        'name: "simple_2"', 'platform: "onnxruntime_onnx"']
    assert sorted(p.name for p in folder.iterdir()) == [
        "2", CONFIG_FILE, "core2-model.json", "labels.txt"]
    assert (folder / "2" / "model.onnx").read_text() == "3"  # the artifact's newest, 3/
    assert read_records(repo) == {"simple_2": {"name": "simple"}}


def test_a_python_model_boots_through_the_packages_of_the_server(tmp_path):
    folder = write_model(tmp_path / "repo", "adder_1", 1,
                         artifact(tmp_path, PYTHON, versions=("1",), files=("adder.py",)), {})
    config = (folder / CONFIG_FILE).read_text()
    assert f'default_model_filename: "{BOOT_FILE}"' in config
    assert "adder.py" not in config
    assert [line for line in config.splitlines() if line.startswith("name:")] == [
        'name: "adder_1"']
    boot = (folder / "1" / BOOT_FILE).read_text()
    assert "CORE2_TRITON_PYTHONPATH" in boot
    assert "from adder import TritonPythonModel" in boot
    compile(boot, BOOT_FILE, "exec")


@pytest.mark.parametrize("config, versions, reason", [
    (None, ("1",), "needs config.pbtxt"),
    (ONNX, (), "needs a numbered version folder"),
])
def test_a_folder_triton_cannot_serve_is_refused_with_the_reason(tmp_path, config, versions,
                                                                 reason):
    with pytest.raises(SettingsError, match=reason) as err:
        write_model(tmp_path / "repo", "m_1", 1, artifact(tmp_path, config, versions), {})
    assert str(err.value).startswith("storageUri:")
    assert not (tmp_path / "repo" / "m_1").exists()
    json.dumps(str(err.value))
