"""core2 review policies as plain functions over (resource type, props), so tests can run
them on the resources the mocks capture. `__main__.py` wires them into a Pulumi policy pack.

Each rule returns a list of violation messages (empty: compliant).
"""

import re
from collections.abc import Iterable

from runtime.scheduler_auth import TOKEN as TOKEN_ENV
from runtime.specs.common import SpecError, parse_quantity
from runtime.specs.experiment import ExperimentSpec
from runtime.specs.model import ModelSpec

DYNAMIC = "pulumi-python:dynamic/core2:"  # through the scheduler API (target local)
CUSTOM = "kubernetes:mlops.seldon.io/v1alpha1:"  # mlops.seldon.io objects (cluster stacks)
WORKLOADS = {"kubernetes:apps/v1:Deployment", "kubernetes:apps/v1:StatefulSet",
             "kubernetes:apps/v1:DaemonSet", "kubernetes:batch/v1:Job",
             "kubernetes:batch/v1:CronJob", "kubernetes:core/v1:Pod"}
ENVIRONMENT_LABEL = "core2.io/environment"
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def seldon(resource_type: str, props: dict, kind: str) -> tuple[str, dict] | None:
    """(name, spec) of a Model, Pipeline or Experiment, whichever way the stack delivers it."""
    if resource_type == f"{DYNAMIC}{kind}":
        return props.get("name", "?"), props.get("spec") or {}
    if resource_type == f"{CUSTOM}{kind}":
        return (props.get("metadata") or {}).get("name", "?"), props.get("spec") or {}
    return None


def _pod_spec(resource_type: str, props: dict) -> dict | None:
    if resource_type not in WORKLOADS:
        return None
    spec = props.get("spec") or {}
    if resource_type == "kubernetes:core/v1:Pod":
        return spec
    if resource_type == "kubernetes:batch/v1:CronJob":
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    return (spec.get("template") or {}).get("spec") or {}


def _containers(resource_type: str, props: dict) -> list[dict]:
    pod = _pod_spec(resource_type, props)
    if pod is None:
        return []
    return [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]


def _where(props: dict) -> str:
    meta = props.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '?')}".lstrip("/")


def image_pinned(image: str) -> bool:
    """A digest, or an explicit tag other than `latest` (a registry port is not a tag)."""
    if _DIGEST.search(image):
        return True
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return False
    return last.rsplit(":", 1)[1] not in ("", "latest")


def images_pinned(resource_type: str, props: dict) -> list[str]:
    return [f"{_where(props)}: container {c.get('name')} image {c.get('image')!r} is not "
            "pinned to a tag or digest"
            for c in _containers(resource_type, props) if not image_pinned(c.get("image", ""))]


def resource_limits(resource_type: str, props: dict) -> list[str]:
    out = []
    for c in _containers(resource_type, props):
        limits = (c.get("resources") or {}).get("limits") or {}
        missing = [r for r in ("cpu", "memory") if r not in limits]
        if missing:
            out.append(f"{_where(props)}: container {c.get('name')} has no "
                       f"{' or '.join(missing)} limit")
    return out


def no_open_load_balancer_in_production(resource_type: str, props: dict) -> list[str]:
    if resource_type != "kubernetes:core/v1:Service":
        return []
    spec = props.get("spec") or {}
    labels = (props.get("metadata") or {}).get("labels") or {}
    if (spec.get("type") == "LoadBalancer" and labels.get(ENVIRONMENT_LABEL) == "production"
            and not spec.get("loadBalancerSourceRanges")):
        return [f"{_where(props)}: a production LoadBalancer needs loadBalancerSourceRanges"]
    return []


def experiment_weights(resource_type: str, props: dict) -> list[str]:
    if not (found := seldon(resource_type, props, "Experiment")):
        return []
    name, raw = found
    try:
        spec = ExperimentSpec.parse(raw, f"experiment {name}")
    except SpecError as e:
        return [str(e)]
    if spec.candidates and sum(c.weight for c in spec.candidates) <= 0:
        return [f"experiment {name}: candidate weights must add up to more than 0"]
    return []


RESOURCE_RULES = {
    "core2-images-pinned": ("Every container image is pinned to a tag (not latest) or a digest.",
                            images_pinned),
    "core2-resource-limits": ("Every container sets CPU and memory limits.", resource_limits),
    "core2-no-open-load-balancer-in-production": (
        "A production LoadBalancer Service must restrict loadBalancerSourceRanges.",
        no_open_load_balancer_in_production),
    "core2-experiment-weights": (
        "Experiments have candidates with positive weights and a default among them.",
        experiment_weights),
}


def _servers(resources: Iterable[tuple[str, dict]]) -> dict[str, dict]:
    """Server StatefulSets -> {name: {capabilities, memory, overCommit}} from agent flags."""
    out = {}
    for rtype, props in resources:
        if rtype != "kubernetes:apps/v1:StatefulSet":
            continue
        for c in _containers(rtype, props):
            args = c.get("args") or []
            if c.get("name") == "agent" and "--server-name" in args:
                flag = dict(zip(args[::2], args[1::2], strict=False))
                out[flag["--server-name"]] = {
                    "capabilities": set(flag.get("--capabilities", "").split(",")),
                    "memory": parse_quantity(flag.get("--memory", "0")),
                    "overCommit": int(flag.get("--over-commit", "0")),
                }
    return out


def model_requirements_satisfiable(resources: list[tuple[str, dict]]) -> list[str]:
    """Every Model fits some Server of the stack (capabilities, pinned server, memory).
    Stacks without Servers (target local) are left to the scheduler."""
    servers = _servers(resources)
    if not servers:
        return []
    out = []
    for rtype, props in resources:
        if not (found := seldon(rtype, props, "Model")):
            continue
        name, raw = found
        try:
            spec = ModelSpec.parse(raw, f"model {name}")
        except SpecError as e:
            out.append(str(e))
            continue
        candidates = {spec.server: servers[spec.server]} if spec.server in servers else (
            {} if spec.server else servers)
        if spec.server and not candidates:
            out.append(f"model {name}: server {spec.server!r} is not in this stack")
            continue
        fits = [s for s, info in candidates.items()
                if set(spec.requirements) <= info["capabilities"]
                and spec.memory_bytes <= info["memory"] * (100 + info["overCommit"]) // 100]
        if not fits:
            out.append(f"model {name}: no server offers requirements "
                       f"{sorted(spec.requirements)} with {spec.memory or 0} memory "
                       f"(servers: {', '.join(sorted(candidates))})")
    return out


def experiment_targets_exist(resources: list[tuple[str, dict]]) -> list[str]:
    """Experiment candidates and mirrors name Models/Pipelines this stack manages."""
    names: dict[str, set[str]] = {"model": set(), "pipeline": set()}
    for rtype, props in resources:
        for kind in ("Model", "Pipeline"):
            if found := seldon(rtype, props, kind):
                names[kind.lower()].add(found[0])
    out = []
    for rtype, props in resources:
        if not (found := seldon(rtype, props, "Experiment")):
            continue
        name, spec = found
        kind = spec.get("resourceType", "model")
        targets = [c.get("name") for c in spec.get("candidates") or []]
        if spec.get("mirror"):
            targets.append(spec["mirror"].get("name"))
        missing = [t for t in targets if t not in names.get(kind, set())]
        if missing:
            out.append(f"experiment {name}: {kind}(s) {', '.join(missing)} "
                       "are not in this stack")
    return out


def _production(resources: list[tuple[str, dict]]) -> bool:
    """The Platform labels its Namespace and Envoy Service with the stack's environment."""
    return any(((props.get("metadata") or {}).get("labels") or {}).get(ENVIRONMENT_LABEL)
               == "production" for _, props in resources)


def production_scheduler_token(resources: list[tuple[str, dict]]) -> list[str]:
    """In production the scheduler's API (models, pipelines, server registration) takes no
    anonymous client: its container reads a bearer token from a Secret."""
    if not _production(resources):
        return []
    out = []
    for rtype, props in resources:
        for c in _containers(rtype, props):
            if (c.get("command") or [])[-1:] != ["runtime.scheduler"]:
                continue
            env = {e.get("name"): e for e in c.get("env") or []}
            ref = ((env.get(TOKEN_ENV) or {}).get("valueFrom") or {}).get("secretKeyRef")
            if not ref:
                out.append(f"{_where(props)}: a production stack must set "
                           "schedulerTokenSecret (a Secret with key `token`), so the "
                           "scheduler refuses unauthenticated clients")
    return out


# The least traffic (percent) a production stack lets an adaptive experiment's strategy leave
# any candidate: it keeps every candidate explored, so a wrong favourite can still be noticed.
PRODUCTION_MIN_WEIGHT = 5


def production_adaptive_min_weight(resources: list[tuple[str, dict]]) -> list[str]:
    """In production, every adaptive experiment (spec.strategy) keeps each candidate at
    least PRODUCTION_MIN_WEIGHT percent of the traffic."""
    if not _production(resources):
        return []
    out = []
    for rtype, props in resources:
        if not (found := seldon(rtype, props, "Experiment")):
            continue
        name, spec = found
        strategy = spec.get("strategy")
        if isinstance(strategy, dict):
            least = strategy.get("minWeight", 5)
            if not isinstance(least, int | float) or least < PRODUCTION_MIN_WEIGHT:
                out.append(f"experiment {name}: strategy.minWeight {least} is below "
                           f"{PRODUCTION_MIN_WEIGHT}, the least a production stack lets a "
                           "candidate keep")
    return out


STACK_RULES = {
    "core2-production-scheduler-token": (
        "Production stacks set schedulerTokenSecret: the scheduler requires a bearer token.",
        production_scheduler_token),
    "core2-model-requirements-satisfiable": (
        "Every Model's requirements and memory fit a Server of the stack.",
        model_requirements_satisfiable),
    "core2-experiment-targets-exist": (
        "Experiment candidates are Models or Pipelines of the stack.",
        experiment_targets_exist),
    "core2-production-adaptive-min-weight": (
        f"Production adaptive experiments keep every candidate at least "
        f"{PRODUCTION_MIN_WEIGHT}% of traffic (strategy.minWeight).",
        production_adaptive_min_weight),
}


def check_all(resources: list[tuple[str, dict]]) -> dict[str, list[str]]:
    """Every rule over a stack's resources: {policy name: violations}."""
    out = {name: [v for rtype, props in resources for v in rule(rtype, props)]
           for name, (_, rule) in RESOURCE_RULES.items()}
    out.update({name: rule(resources) for name, (_, rule) in STACK_RULES.items()})
    return out
