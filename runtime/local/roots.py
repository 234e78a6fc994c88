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
    path = Path(run_dir) / ROOTS_FILE
    known = set(read_roots(path))
    new = [str(Path(m).resolve().parent) for m in manifests]
    new = [f for f in dict.fromkeys(new) if Path(f) not in known]
    if new:
        with open(path, "a") as f:
            f.writelines(line + "\n" for line in new)
