"""Write a model version into the server's repository as `<repository>/<internal>/`.

The folder links to every entry of the cached artifact (so custom runtimes find their Python
files and relative paths) and holds the `model-settings.json` MLServer loads, plus
`core2-model.json`: what the agent needs to recognise the model after it restarts.
"""

import importlib.util
import json
import shutil
from pathlib import Path

from runtime.specs.model import ModelSpec

SETTINGS_FILE = "model-settings.json"
RECORD_FILE = "core2-model.json"

# requirement -> (MLServer runtime class, the package that provides it)
RUNTIMES = {
    "sklearn": ("mlserver_sklearn.SKLearnModel", "mlserver-sklearn"),
    "xgboost": ("mlserver_xgboost.XGBoostModel", "mlserver-xgboost"),
    "lightgbm": ("mlserver_lightgbm.LightGBMModel", "mlserver-lightgbm"),
    "mlflow": ("mlserver_mlflow.MLflowRuntime", "mlserver-mlflow"),
    "catboost": ("mlserver_catboost.CatboostModel", "mlserver-catboost"),
    "huggingface": ("mlserver_huggingface.HuggingFaceRuntime", "mlserver-huggingface"),
    "alibi-detect": ("mlserver_alibi_detect.AlibiDetectRuntime", "mlserver-alibi-detect"),
    "alibi-explain": ("mlserver_alibi_explain.AlibiExplainRuntime", "mlserver-alibi-explain"),
}


class SettingsError(Exception):
    """No way to serve this artifact; the message is the model's failure reason."""


def choose_implementation(spec: ModelSpec) -> str:
    for requirement in spec.requirements:
        if requirement in RUNTIMES:
            implementation, package = RUNTIMES[requirement]
            if importlib.util.find_spec(implementation.split(".")[0]) is None:
                raise SettingsError(f"requirements: {requirement!r} needs the MLServer runtime "
                                    f"{package}, which is not installed on this server")
            return implementation
    raise SettingsError(
        f"requirements: none of {spec.requirements} names an MLServer runtime "
        f"(one of {', '.join(RUNTIMES)}); or ship a model-settings.json with an "
        "'implementation' in the artifact folder")


def build_settings(internal_name: str, spec: ModelSpec, artifact: Path) -> dict:
    """model-settings.json content for this version, served from `artifact` (cache folder)."""
    own = artifact / SETTINGS_FILE
    settings: dict = {}
    if own.is_file():
        try:
            settings = json.loads(own.read_text())
        except (OSError, ValueError) as e:
            raise SettingsError(f"storageUri: the artifact's {SETTINGS_FILE} is not valid "
                                f"JSON: {e}") from None
        if not isinstance(settings, dict) or not settings.get("implementation"):
            raise SettingsError(f"storageUri: the artifact's {SETTINGS_FILE} has no "
                                "'implementation'")
    else:
        settings["implementation"] = choose_implementation(spec)
    settings["name"] = internal_name
    settings.pop("version", None)  # the internal name already pins the version
    parameters = dict(settings.get("parameters") or {})
    parameters.pop("version", None)
    if "uri" not in parameters:
        parameters["uri"] = _default_uri(artifact)
    extra = dict(parameters.get("extra") or {})
    extra.update({p.name: p.value for p in spec.parameters})
    if extra:
        parameters["extra"] = extra
    settings["parameters"] = parameters
    return settings


def _default_uri(artifact: Path) -> str:
    entries = [p for p in artifact.iterdir() if p.name != SETTINGS_FILE]
    if len(entries) == 1 and entries[0].is_file():
        return str(entries[0])
    return str(artifact)


def write_model(repository: Path, internal_name: str, spec: ModelSpec, artifact: Path,
                record: dict) -> Path:
    """Create `<repository>/<internal_name>/`; returns the folder."""
    settings = build_settings(internal_name, spec, artifact)
    folder = Path(repository) / internal_name
    remove_model(repository, internal_name)
    folder.mkdir(parents=True)
    for entry in artifact.iterdir():
        if entry.name != SETTINGS_FILE:
            (folder / entry.name).symlink_to(entry.resolve())
    (folder / SETTINGS_FILE).write_text(json.dumps(settings, indent=2))
    (folder / RECORD_FILE).write_text(json.dumps(record))
    return folder


def remove_model(repository: Path, internal_name: str) -> None:
    shutil.rmtree(Path(repository) / internal_name, ignore_errors=True)


def read_records(repository: Path) -> dict[str, dict]:
    """internal name -> record, for every model folder the agent wrote."""
    records: dict[str, dict] = {}
    root = Path(repository)
    if not root.is_dir():
        return records
    for path in root.glob(f"*/{RECORD_FILE}"):
        try:
            records[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return records
