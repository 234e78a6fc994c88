"""Fetch a model artifact (`storageUri`) into the local cache with fsspec, within the server's
fetch rules (fetch_rules.py): the URI is checked before anything is copied, every file is
copied in chunks counted against the size cap, and a fetch stops when it is cancelled (its
model was unloaded or deleted).

One cache folder per (uri, artifactVersion); a folder that is already there is reused. A URI
naming a folder has its contents copied; a URI naming a single file is copied into the folder.
"""

import hashlib
import os
import shutil
import tempfile
import threading
from pathlib import Path

import fsspec

from runtime.agent.fetch_rules import (
    FIELD,
    FetchAborted,
    FetchRefused,
    check_local,
    check_uri,
    http_client_factory,
    scheme_of,
)
from runtime.specs.fetch import FetchRules

# Protocols whose fsspec backend ships as an optional extra of core2.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
           "abfss": "azure"}
CHUNK = 1 << 20
OPEN = FetchRules()  # a bare agent's rules: any local path, no loopback/metadata addresses


class FetchError(Exception):
    """The artifact could not be fetched; the message says why, for the model's status."""


class FetchCancelled(FetchError):
    """The fetch was stopped because its model was unloaded or deleted."""


def cache_folder(cache_dir: Path, uri: str, artifact_version: int | None) -> Path:
    key = hashlib.sha256(f"{uri}\n{artifact_version}".encode()).hexdigest()[:20]
    return Path(cache_dir) / key


def _filesystem(uri: str, rules: FetchRules, cancel: threading.Event):
    protocol = scheme_of(uri)
    options = {}
    if protocol in ("http", "https"):
        options = {"get_client": http_client_factory(rules, cancel),
                   "skip_instance_cache": True}
    try:
        return fsspec.core.url_to_fs(uri, **options)
    except ImportError as e:
        extra = _EXTRAS.get(protocol)
        hint = f"install core2[{extra}]" if extra else "install its fsspec backend"
        raise FetchError(f"storageUri {uri!r}: {protocol}:// is not available here ({hint}): "
                         f"{e}") from None
    except ValueError as e:
        raise FetchError(f"storageUri {uri!r}: unsupported scheme {protocol!r} ({e})") from None


def _ours(e: BaseException | None) -> FetchError | None:
    """A refusal or cancellation raised inside a backend (e.g. aiohttp), possibly wrapped."""
    while e is not None:
        if isinstance(e, FetchRefused):
            return FetchError(str(e))
        if isinstance(e, FetchAborted):
            return FetchCancelled(str(e))
        e = e.__cause__ or e.__context__
    return None


def fetch(uri: str, cache_dir: Path, artifact_version: int | None = None,
          rules: FetchRules = OPEN, roots: list[Path] | None = None,
          cancel: threading.Event | None = None) -> Path:
    """Return the cache folder holding the artifact, downloading it if needed. `roots`: the
    local folders allowed (default rules.localRoots)."""
    roots = list(rules.localRoots or []) if roots is None else roots
    try:
        check_uri(uri, rules, roots)
    except FetchRefused as e:
        raise FetchError(str(e)) from None
    target = cache_folder(cache_dir, uri, artifact_version)
    if target.is_dir():
        return target
    cancel = cancel or threading.Event()
    fs, path = _filesystem(uri, rules, cancel)
    copier = _Copier(fs, uri, rules, roots, cancel)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            if fs.isdir(path):
                copier.folder(path, staging)
            elif fs.isfile(path):
                copier.files([(path, copier.size(path))], staging / _basename(path))
            else:
                raise FetchError(f"storageUri {uri!r}: nothing found there")
        except FetchError:
            raise
        except Exception as e:  # each backend raises its own kinds; report them all clearly
            if ours := _ours(e):
                raise ours from None
            raise FetchError(f"storageUri {uri!r}: {type(e).__name__}: {e}") from None
        if not any(staging.iterdir()):
            raise FetchError(f"storageUri {uri!r}: the folder is empty")
        try:
            os.rename(staging, target)  # atomic: a half-fetched folder is never reused
        except OSError:
            if not target.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or "artifact"


class _Copier:
    """Copies files in chunks: counts bytes against the cap, stops when cancelled, and (for
    local paths) re-checks each file's real location against the roots."""

    def __init__(self, fs, uri: str, rules: FetchRules, roots: list[Path],
                 cancel: threading.Event):
        self.fs, self.uri, self.rules, self.roots, self.cancel = fs, uri, rules, roots, cancel
        self.local = scheme_of(uri) == "file"
        self.copied = 0

    def size(self, path: str) -> int | None:
        try:
            return self.fs.size(path)
        except Exception:  # unknown size: the running count still enforces the cap
            return None

    def folder(self, path: str, dest: Path) -> None:
        root = path.rstrip("/")
        found = self.fs.find(root, detail=True)
        pairs = []
        for remote, info in sorted(found.items()):
            relative = remote[len(root):].lstrip("/") if remote.startswith(root) \
                else _basename(remote)
            if relative:
                pairs.append((remote, info.get("size"), dest / relative))
        self._check_total(sum(s or 0 for _, s, _ in pairs))
        for remote, size, local in pairs:
            self.files([(remote, size)], local)

    def files(self, items: list[tuple[str, int | None]], local: Path) -> None:
        for remote, size in items:
            self._check_total(self.copied + (size or 0))
            if self.local:  # a symbolic link inside a root may point outside it
                try:
                    check_local(remote, self.uri, self.rules, self.roots)
                except FetchRefused as e:
                    raise FetchError(str(e)) from None
            local.parent.mkdir(parents=True, exist_ok=True)
            with self.fs.open(remote, "rb") as src, open(local, "wb") as dst:
                while chunk := src.read(CHUNK):
                    if self.cancel.is_set():
                        raise FetchCancelled(f"storageUri {self.uri!r}: fetch cancelled: the "
                                             "model was unloaded")
                    self.copied += len(chunk)
                    self._check_total(self.copied)
                    dst.write(chunk)

    def _check_total(self, total: int) -> None:
        if total > self.rules.max_bytes:
            raise FetchError(f"{FIELD}: {self.uri!r}: the artifact is larger than this "
                             f"server's fetch.maxBytes ({self.rules.max_bytes} bytes)")
