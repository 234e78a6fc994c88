"""Write a model version into Triton's repository as `<repository>/<internal>/`.

The artifact is a Triton model folder (as Seldon's Triton models are): `config.pbtxt` and
numbered version folders (`1/model.py`, `1/model.onnx`, ...). The written folder carries the
internal name in `config.pbtxt` (Triton wants the folder's name there) and the artifact's
newest version folder under core2's version number, so Triton answers as MLServer does through
core2's name hook (`"model_name": "tfsimple_2", "model_version": "2"`, metadata alike) with
no rewriting of answers. It links every other artifact entry and keeps `core2-model.json`
(what the agent needs after a restart) as the MLServer layout does.

Python-backend models get a boot file: Triton runs their interpreter isolated (PYTHONPATH is
ignored), so `core2_boot.py` puts `$CORE2_TRITON_PYTHONPATH` on `sys.path` and serves the model's
own module; `config.pbtxt` names it as `default_model_filename`.
"""

import json
import re
from pathlib import Path

from runtime.agent.modelsettings import RECORD_FILE, SettingsError, remove_model

CONFIG_FILE = "config.pbtxt"
BOOT_FILE = "core2_boot.py"
_TOP_FIELD = r"^{}\s*:\s*\"([^\"]*)\"[ \t]*\n?"
_BOOT = '''"""Written by core2's agent (runtime/agent/triton_layout.py)."""
import os
import sys

sys.path.extend(p for p in os.environ.get("CORE2_TRITON_PYTHONPATH", "").split(os.pathsep)
                if p and p not in sys.path)
from {module} import TritonPythonModel  # noqa: E402,F401
'''


def _top_field(config: str, field: str) -> tuple[str | None, str]:
    """(value of a top-level `field: "..."` line, the config without it)."""
    pattern = re.compile(_TOP_FIELD.format(field), re.M)
    match = pattern.search(config)
    return (match.group(1) if match else None), pattern.sub("", config)


def build_config(internal_name: str, artifact: Path) -> tuple[str, str | None]:
    """(config.pbtxt for the version, the Python module to boot or None)."""
    path = artifact / CONFIG_FILE
    try:
        config = path.read_text()
    except OSError:
        raise SettingsError(f"storageUri: a Triton model folder needs {CONFIG_FILE} (found: "
                            f"{', '.join(sorted(p.name for p in artifact.iterdir())) or 'nothing'}"
                            ")") from None
    _, config = _top_field(config, "name")
    backend, _ = _top_field(config, "backend")
    module = None
    if backend == "python":
        filename, config = _top_field(config, "default_model_filename")
        module = Path(filename or "model.py").stem
        config = f'default_model_filename: "{BOOT_FILE}"\n' + config
    return f'name: "{internal_name}"\n' + config, module


def write_model(repository: Path, internal_name: str, version: int, artifact: Path,
                record: dict) -> Path:
    """Create `<repository>/<internal_name>/` with the artifact's newest version folder as
    `<version>/`; returns the folder."""
    versions = [p for p in artifact.iterdir() if p.is_dir() and p.name.isdigit()]
    if not versions:
        raise SettingsError("storageUri: a Triton model folder needs a numbered version folder "
                            f"(e.g. 1/) beside {CONFIG_FILE}")
    newest = max(versions, key=lambda p: int(p.name))
    config, module = build_config(internal_name, artifact)
    folder = Path(repository) / internal_name
    remove_model(repository, internal_name)
    folder.mkdir(parents=True)
    served = folder / str(version)
    served.mkdir()
    for item in newest.iterdir():
        (served / item.name).symlink_to(item.resolve())
    if module is not None:
        (served / BOOT_FILE).write_text(_BOOT.format(module=module))
    for entry in artifact.iterdir():
        if entry not in versions and entry.name != CONFIG_FILE:
            (folder / entry.name).symlink_to(entry.resolve())
    (folder / CONFIG_FILE).write_text(config)
    (folder / RECORD_FILE).write_text(json.dumps(record))
    return folder
