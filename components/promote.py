"""`core2 promote EXPERIMENT --from STACK --to STACK[,STACK]`: make an experiment's winner the
default model in other stacks' config, as a reviewable diff.

What changes in each target stack (stacks/Pulumi.<stack>.yaml):
- the model the experiment's `default` names takes the winner's spec (artifact, requirements,
  memory, parameters, ...) but keeps its own scaling (replicas, minReplicas, maxReplicas),
  since environments size models differently; it is added if the stack lacks it;
- the experiment is removed (it has ended there);
- the experiment's other models (the winner's own entry included) are removed when nothing
  else in the stack still uses them.
The winner is `--winner`, or else the experiment's only candidate besides the default.
`--winner auto` asks the scheduler the experiment runs on (`--scheduler`, or the local
platform's) for an adaptive experiment's learned state and takes the candidate its strategy
favours, refusing while the evidence is too thin (runtime.scheduler.bandit.choose_winner:
every candidate has at least --min-rewards rewards, the favourite has the highest mean
reward, and its 95% interval lies above every other candidate's).

Clouds: a target stack that sets `core2:storageScheme` (s3, gs, az) reads artifacts from that
store only. The winner's `storageUri` is first rewritten by the target's `core2:storageUriMap`
({source prefix: target prefix}, longest prefix wins; the artifact must have been copied
there); a URI still in another cloud's store is refused, naming the model, URI and stack.

The files are edited on ruamel.yaml's round-trip tree: only the entries that change are
re-emitted; comments, key order, quoting and everything else keep their text.
"""

import difflib
import io
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from runtime.scheduler import bandit
from runtime.specs.common import SpecError
from runtime.specs.experiment import ExperimentSpec
from runtime.specs.manifest import load_file
from runtime.specs.model import ModelSpec

PREFIX = "core2:"
SCALING = ("replicas", "minReplicas", "maxReplicas")
# object-store schemes, by cloud (aliases fsspec accepts for the same store)
CLOUD_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az",
                 "abfss": "az", "adl": "az"}


class PromoteError(Exception):
    """A promotion that cannot be done; the message says which stack and why."""


# ---- reading stack config ----------------------------------------------------------------
def stack_path(stacks_dir: Path, stack: str) -> Path:
    path = Path(stacks_dir) / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        raise PromoteError(f"stack {stack!r}: {path} not found")
    return path


def _config(path: Path) -> dict:
    return _load(path).get("config") or {}


def _entries(path: Path, kind: str) -> list[tuple[str, dict, dict]]:
    """(name, spec, entry) for every Model/Experiment of a stack, manifests expanded."""
    key = f"{PREFIX}{kind.lower()}s"
    out = []
    for entry in _config(path).get(key) or []:
        if "manifest" in entry:
            manifest = Path(entry["manifest"])
            if not manifest.is_absolute():  # stack paths are relative to the project root
                manifest = path.parent.parent / manifest
            for r in load_file(manifest):
                if r.kind == kind and entry.get("name") in (None, r.name):
                    out.append((r.name, r.spec.model_dump(exclude_none=True), entry))
        else:
            out.append((entry["name"], entry["spec"], entry))
    return out


def _find(path: Path, kind: str, name: str, stack: str) -> tuple[dict, dict]:
    for n, spec, entry in _entries(path, kind):
        if n == name:
            return spec, entry
    raise PromoteError(f"stack {stack!r}: no {kind} named {name!r}")


# ---- the change ----------------------------------------------------------------------------
def choose_winner(exp: ExperimentSpec, name: str, winner: str | None) -> str:
    candidates = [c.name for c in exp.candidates]
    if winner is not None:
        if winner not in candidates:
            raise PromoteError(f"--winner: {winner!r} is not a candidate of {name} "
                               f"({', '.join(candidates)})")
        return winner
    challengers = [c for c in candidates if c != exp.default]
    if len(challengers) != 1:
        raise PromoteError(f"experiment {name}: {len(challengers)} challengers "
                           f"({', '.join(challengers)}); pass --winner")
    return challengers[0]


def auto_winner(status_detail: dict, name: str, min_rewards: int = bandit.MIN_REWARDS) -> str:
    """The winner of adaptive experiment `name` from its scheduler status detail."""
    learned = status_detail.get("candidates")
    if not learned:
        raise PromoteError(f"--winner auto: experiment {name} has no strategy, so no rewards "
                           "to choose by; pass --winner NAME")
    arms = {n: bandit.Arm(c["pulls"], c["rewards"], c["meanReward"] * c["rewards"])
            for n, c in learned.items()}
    try:
        return bandit.choose_winner(arms, {n: c["weight"] for n, c in learned.items()}, min_rewards)
    except ValueError as e:
        raise PromoteError(f"--winner auto: experiment {name}: {e}") from None


def promoted_spec(target: dict | None, winner: dict) -> dict:
    """The winner's spec with the target's scaling; key order of the target kept."""
    new = {k: v for k, v in winner.items() if k not in SCALING}
    for k in SCALING:
        if target and k in target:
            new[k] = target[k]
    if target is None:
        return new
    ordered = {k: new[k] for k in target if k in new}
    ordered.update({k: v for k, v in new.items() if k not in ordered})
    return ordered


def _scheme(uri: str) -> str | None:
    """The cloud of an object-store URI (None: a local path, http(s), ... reachable as is)."""
    if "://" not in uri:
        return None
    return CLOUD_SCHEMES.get(uri.split("://", 1)[0].lower())


def for_target(config: dict, stack: str, model: str, spec: dict) -> dict:
    """The winner's spec as the target stack can load it: storageUri mapped by the stack's
    storageUriMap, and refused when it still names another cloud's store."""
    uri = spec.get("storageUri")
    if not isinstance(uri, str):
        return spec
    mapping = config.get(f"{PREFIX}storageUriMap") or {}
    if not isinstance(mapping, dict):
        raise PromoteError(f"stack {stack!r}: storageUriMap must map URI prefixes to prefixes")
    prefixes = sorted((p for p in mapping if uri.startswith(p)), key=len, reverse=True)
    if prefixes:
        uri = mapping[prefixes[0]] + uri[len(prefixes[0]):]
    wanted = config.get(f"{PREFIX}storageScheme") or None
    found = _scheme(uri)
    if wanted and found and found != CLOUD_SCHEMES.get(str(wanted).lower(), wanted):
        raise PromoteError(
            f"stack {stack!r}: model {model}'s storageUri {spec['storageUri']} is in a "
            f"{found}:// store, but the stack reads {wanted}:// (core2:storageScheme). Copy "
            f"the artifact there and map it in the stack's core2:storageUriMap, e.g. "
            f"'{spec['storageUri'].rsplit('/', 1)[0]}/': '{wanted}://<bucket>/<path>/'")
    return {**spec, "storageUri": uri}


def _uses(config: dict, model: str) -> bool:
    for exp in config.get(f"{PREFIX}experiments") or []:
        spec = exp.get("spec") or {}
        names = [c.get("name") for c in spec.get("candidates") or []]
        if spec.get("mirror"):
            names.append(spec["mirror"].get("name"))
        if model in names or spec.get("default") == model:
            return True
    for pipe in config.get(f"{PREFIX}pipelines") or []:
        for step in (pipe.get("spec") or {}).get("steps") or []:
            if step.get("name") == model:
                return True
    return any("manifest" in e for e in (config.get(f"{PREFIX}pipelines") or [])
               + (config.get(f"{PREFIX}experiments") or []))  # unknown contents: keep it


def rewrite(path: Path, stack: str, experiment: str, exp: ExperimentSpec, winner: str,
            winner_spec: dict) -> str:
    """The new text of a target stack file: changed in place on ruamel.yaml's round-trip
    tree, so comments, key order, quoting and untouched entries keep their text."""
    document = _load(path)
    if not document.get("config"):
        document["config"] = CommentedMap()
    config = document["config"]
    models = config.get(f"{PREFIX}models")
    if models is None:
        models = config[f"{PREFIX}models"] = CommentedSeq()
    experiments = config.get(f"{PREFIX}experiments") or []
    for kind, entries in (("models", models), ("experiments", experiments)):
        for entry in entries:
            if "manifest" in entry:
                raise PromoteError(f"stack {stack!r}: {kind} come from {entry['manifest']}; "
                                   f"promote rewrites inline `name`/`spec` entries only")
    default = exp.default
    assert default is not None  # promote() refuses an experiment without one
    current = next((m for m in models if m["name"] == default), None)
    winner_spec = for_target(config, stack, default, winner_spec)
    spec = promoted_spec(current["spec"] if current else None, winner_spec)
    ModelSpec.parse(spec, f"stack {stack}: model {default}")
    if current is None:
        models.append(_node({"name": default, "spec": spec}))
    else:
        _update(current["spec"], spec)
    _remove(experiments, lambda e: e["name"] == experiment)
    if not experiments:
        config.pop(f"{PREFIX}experiments", None)
    # the experiment's other models (the winner included) go when nothing else uses them
    ended = {c.name for c in exp.candidates} | ({exp.mirror.name} if exp.mirror else set())
    _remove(models, lambda m: m["name"] != default and m["name"] in ended
            and not _uses(config, m["name"]))
    out = io.StringIO()
    _yaml().dump(document, out)
    return out.getvalue()


# ---- round-trip YAML -----------------------------------------------------------------------
def _yaml() -> YAML:
    """Round-trip YAML in the stacks' layout (`- ` at the parent key's column, 2 spaces);
    lines are never re-wrapped."""
    y = YAML()
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=2, offset=0)
    y.width = 4096
    return y


def _load(path: Path) -> CommentedMap:
    return _yaml().load(path.read_text()) or CommentedMap()


def _node(value: Any) -> Any:
    """A new value as the stacks write it: short lists of scalars in flow style ([a, b])."""
    if isinstance(value, dict):
        return CommentedMap((k, _node(v)) for k, v in value.items())
    if isinstance(value, list):
        seq = CommentedSeq(_node(v) for v in value)
        if len(value) <= 6 and all(isinstance(v, str | int | float | bool) for v in value):
            seq.fa.set_flow_style()
        return seq
    return value


def _update(node: CommentedMap, values: dict) -> None:
    """Make `node` equal `values` in place: equal entries (and their comments) stay as they
    are, nested maps are updated the same way, new keys go last."""
    for key in [k for k in node if k not in values]:
        del node[key]
    for key, value in values.items():
        old = node.get(key)
        if isinstance(old, CommentedMap) and isinstance(value, dict):
            _update(old, value)
        elif key not in node or old != value:
            node[key] = _node(value)


def _remove(seq: list, drop: Callable[[Any], bool]) -> None:
    """Delete matching entries in place (the others keep their text)."""
    for i in reversed(range(len(seq))):
        if drop(seq[i]):
            del seq[i]


# ---- command -------------------------------------------------------------------------------
def promote(experiment: str, source: str, targets: list[str], stacks_dir: Path,
            winner: str | None = None, dry_run: bool = False, out=None) -> dict[str, str]:
    """Rewrite each target stack; returns {stack: unified diff}. Nothing is written when any
    target fails, or with `dry_run`."""
    src = stack_path(stacks_dir, source)
    exp_spec, _ = _find(src, "Experiment", experiment, source)
    try:
        exp = ExperimentSpec.parse(exp_spec, f"experiment {experiment}")
    except SpecError as e:
        raise PromoteError(str(e)) from None
    if exp.resourceType != "model":
        raise PromoteError(f"experiment {experiment}: only model experiments can be promoted")
    if exp.default is None:
        raise PromoteError(f"experiment {experiment}: has no default model to replace")
    chosen = choose_winner(exp, experiment, winner)
    winner_spec, _ = _find(src, "Model", chosen, source)
    new_texts, diffs = {}, {}
    for stack in targets:
        if stack == source:
            raise PromoteError(f"--to: {stack!r} is the source stack")
        path = stack_path(stacks_dir, stack)
        new_texts[path] = rewrite(path, stack, experiment, exp, chosen, winner_spec)
        diffs[stack] = "".join(difflib.unified_diff(
            path.read_text().splitlines(keepends=True),
            new_texts[path].splitlines(keepends=True),
            fromfile=f"a/{path.name}", tofile=f"b/{path.name}"))
    for stack, diff in diffs.items():
        print(diff or f"# {stack}: already up to date\n", end="", file=out or sys.stdout)
    if not dry_run:
        for path, text in new_texts.items():
            path.write_text(text)
    return diffs
