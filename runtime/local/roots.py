"""The local folders a local platform's agents may fetch artifacts from: the samples, each
server's fetch.localRoots, and the folders of manifests applied through the CLI (recorded in
`<run-dir>/fetch-roots.txt`, which the agents read at every fetch)."""

from pathlib import Path

from runtime.agent.fetch_rules import read_roots
from runtime.local.config import LocalServer
from runtime.specs.fetch import FetchRules

ROOTS_FILE = "fetch-roots.txt"
SAMPLES = Path(__file__).resolve().parents[2] / "samples"


def local_fetch_rules(server: LocalServer) -> FetchRules:
    roots = list(server.fetch.localRoots or [])
    if SAMPLES.is_dir():
        roots.append(SAMPLES)
    return server.fetch.model_copy(update={"localRoots": roots})


def remember_manifest_folders(run_dir: Path, manifests: list[str]) -> None:
    """Admit the folders of manifests a user applied (their relative storageUris point there)."""
    for folder in dict.fromkeys(Path(m).resolve().parent for m in manifests):
        admit_folder(run_dir, folder)


def admit_folder(run_dir: Path, folder: Path) -> None:
    """Let the agents fetch from `folder` (and below)."""
    path = Path(run_dir) / ROOTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(folder).resolve()
    if folder not in set(read_roots(path)):
        with open(path, "a") as f:
            f.write(f"{folder}\n")
