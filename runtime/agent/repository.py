"""MLServer's model repository as the agent lays it out, one folder per model named by its
internal name: a load reads its own `model-settings.json` instead of every one in the repository.

Stock MLServer (`SchemalessModelRepository`) answers `find(name)` by globbing `<root>/**` for
every `model-settings.json` (descending into the linked artifact folders too), parsing each and
keeping the matches, all on the server's event loop: the 1,000th load re-reads 999 files while
inference waits. Here `find` reads `<root>/<name>/` in a worker thread; `list` (the repository
index the agent polls) stats the folders and re-parses only settings files that changed.
A name with no folder of its own falls back to MLServer's scan, so a hand-made repository still
works, at MLServer's cost.
"""

from __future__ import annotations  # `list` is a method name here

import asyncio
import os
from typing import NamedTuple

from mlserver.logging import logger
from mlserver.repository import (
    DEFAULT_MODEL_SETTINGS_FILENAME,
    ModelRepository,
    SchemalessModelRepository,
)
from mlserver.repository.load import load_model_settings
from mlserver.settings import ModelSettings

IMPLEMENTATION = f"{__name__}.NamedModelRepository"


class _Stamp(NamedTuple):
    inode: int
    mtime_ns: int
    size: int


class NamedModelRepository(ModelRepository):
    def __init__(self, root: str):
        self._root = os.path.abspath(root)
        self._scan = SchemalessModelRepository(root)
        self._listed: dict[str, tuple[_Stamp, ModelSettings]] = {}  # folder -> parsed settings

    def _path(self, folder: str) -> str:
        return os.path.join(self._root, folder, DEFAULT_MODEL_SETTINGS_FILENAME)

    def _read(self, name: str) -> ModelSettings | None:
        if not name or os.sep in name or name in (".", ".."):
            return None
        try:
            settings = load_model_settings(self._path(name))
        except FileNotFoundError:
            return None
        return settings if settings.name == name else None

    async def find(self, name: str) -> list[ModelSettings]:
        # A fresh parse per load: the registry keeps (and runtimes may change) this object.
        settings = await asyncio.to_thread(self._read, name)
        if settings is not None:
            return [settings]
        return await self._scan.find(name)  # raises ModelNotFound when nothing matches

    def _list(self) -> list[ModelSettings]:
        listed: dict[str, tuple[_Stamp, ModelSettings]] = {}
        try:
            entries = [e.name for e in os.scandir(self._root) if e.is_dir()]
        except FileNotFoundError:
            entries = []
        for folder in entries:
            path = self._path(folder)
            try:
                st = os.stat(path)
            except OSError:
                continue
            stamp = _Stamp(st.st_ino, st.st_mtime_ns, st.st_size)
            known = self._listed.get(folder)
            if known is not None and known[0] == stamp:
                listed[folder] = known
                continue
            try:
                listed[folder] = (stamp, load_model_settings(path))
            except Exception:  # one bad file must not hide the others (as MLServer's scan)
                logger.exception(f"Failed load model settings at {path}.")
        self._listed = listed
        return [settings for _, settings in listed.values()]

    # after _list: in the class body, `list` names this method from here on
    async def list(self) -> list[ModelSettings]:
        return await asyncio.to_thread(self._list)

