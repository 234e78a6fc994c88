"""How the agent turns a Model spec and its artifact into MLServer's model-settings.json."""

import json

import pytest

from runtime.agent.modelsettings import (
    SETTINGS_FILE,
    SettingsError,
    build_settings,
    read_records,
    write_model,
)
from runtime.specs.model import ModelSpec


def spec(**fields) -> ModelSpec:
    return ModelSpec(storageUri="/models/x", **fields)


def test_sklearn_requirement_picks_the_sklearn_runtime(tmp_path):
    (tmp_path / "model.joblib").write_bytes(b"")
    settings = build_settings("iris_1", spec(requirements=["mlserver", "sklearn"],
                                             parameters=[{"name": "k", "value": "v"}]),
                              tmp_path)
    assert settings == {
        "implementation": "mlserver_sklearn.SKLearnModel", "name": "iris_1",
        "parameters": {"uri": str(tmp_path / "model.joblib"), "extra": {"k": "v"}}}


def test_runtime_not_installed_or_unknown_is_a_clear_reason(tmp_path):
    with pytest.raises(SettingsError, match="mlserver-xgboost, which is not installed"):
        build_settings("m_1", spec(requirements=["xgboost"]), tmp_path)
    with pytest.raises(SettingsError, match=r"requirements: none of \['tensorflow'\]"):
        build_settings("m_1", spec(requirements=["tensorflow"]), tmp_path)


def test_artifact_model_settings_wins_and_is_renamed(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({
        "name": "whatever", "implementation": "my_runtime.Echo",
        "parameters": {"version": "v7", "extra": {"a": "1"}}}))
    settings = build_settings("echo_3", spec(parameters=[{"name": "b", "value": "2"}]),
                              tmp_path)
    assert settings["name"] == "echo_3" and settings["implementation"] == "my_runtime.Echo"
    assert settings["parameters"]["extra"] == {"a": "1", "b": "2"}
    assert "version" not in settings["parameters"]


def test_artifact_model_settings_without_implementation_is_refused(tmp_path):
    (tmp_path / SETTINGS_FILE).write_text("{}")
    with pytest.raises(SettingsError, match="has no 'implementation'"):
        build_settings("m_1", spec(requirements=["sklearn"]), tmp_path)


def test_write_model_links_the_artifact_and_records_the_version(tmp_path):
    artifact = tmp_path / "cache" / "abc"
    artifact.mkdir(parents=True)
    (artifact / "model.joblib").write_bytes(b"w")
    repository = tmp_path / "repository"
    folder = write_model(repository, "iris_2", spec(requirements=["sklearn"]), artifact,
                         {"name": "iris", "version": 2, "memory": 5})
    assert (folder / "model.joblib").resolve() == artifact / "model.joblib"
    assert json.loads((folder / SETTINGS_FILE).read_text())["name"] == "iris_2"
    assert read_records(repository) == {"iris_2": {"name": "iris", "version": 2, "memory": 5}}
