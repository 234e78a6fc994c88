"""Fetch a model artifact (`storageUri`) into the local cache with fsspec.

One cache folder per (uri, artifactVersion); a folder that is already there is reused. A URI
naming a folder has its contents copied; a URI naming a single file is copied into the folder.
"""

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import fsspec

# Protocols whose fsspec backend ships as an optional extra of core2.
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "abfs": "azure",
           "abfss": "azure"}


class FetchError(Exception):
    """The artifact could not be fetched; the message says why, for the model's status."""


def cache_folder(cache_dir: Path, uri: str, artifact_version: int | None) -> Path:
    key = hashlib.sha256(f"{uri}\n{artifact_version}".encode()).hexdigest()[:20]
    return Path(cache_dir) / key


def _filesystem(uri: str):
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    try:
        return fsspec.core.url_to_fs(uri)
    except ImportError as e:
        extra = _EXTRAS.get(protocol)
        hint = f"install core2[{extra}]" if extra else "install its fsspec backend"
        raise FetchError(f"storageUri {uri!r}: {protocol}:// is not available here ({hint}): "
                         f"{e}") from None
    except ValueError as e:
        raise FetchError(f"storageUri {uri!r}: unsupported scheme {protocol!r} ({e})") from None


def fetch(uri: str, cache_dir: Path, artifact_version: int | None = None) -> Path:
    """Return the cache folder holding the artifact, downloading it if needed."""
    target = cache_folder(cache_dir, uri, artifact_version)
    if target.is_dir():
        return target
    fs, path = _filesystem(uri)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        try:
            if fs.isdir(path):
                _copy_folder(fs, path, staging)
            elif fs.isfile(path):
                fs.get_file(path, str(staging / _basename(path)))
            else:
                raise FetchError(f"storageUri {uri!r}: nothing found there")
        except FetchError:
            raise
        except Exception as e:  # each backend raises its own kinds; report them all clearly
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


def _copy_folder(fs, path: str, dest: Path) -> None:
    root = path.rstrip("/")
    for remote in fs.find(root):
        relative = remote[len(root):].lstrip("/") if remote.startswith(root) else _basename(remote)
        if not relative:
            continue
        local = dest / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        fs.get_file(remote, str(local))
