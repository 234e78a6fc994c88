"""What the cluster objects run must be what the runtime accepts: the Envoy bootstrap passes
the real Envoy's config validation, and every container's flags parse with the real CLIs."""

import json
import shlex
import subprocess
import sys

import pytest
import trustme

from components.secrets import ENVOY_TLS_DIR
from runtime.envoy import envoy_binary
from tests.conftest import write_cert
from tests.infra.harness import render_stack

MAINS = {  # `python -m X` -> the function that parses its flags
    "runtime.scheduler": "runtime.scheduler.__main__",
    "runtime.controller": "runtime.controller.__main__",
    "runtime.agent": "runtime.agent.main",
    "runtime.agent.modelserver": "runtime.agent.modelserver",
    "runtime.dataflow.engine": "runtime.dataflow.engine",
    "runtime.dataflow.pipelinegateway": "runtime.dataflow.pipelinegateway",
}
DOWNWARD_API = {"$(REPLICA_IDX)": "2", "$(POD_IP)": "10.1.2.3"}


# Runs in a fresh interpreter per module (MLServer's and core2's OIP protos cannot share
# one descriptor pool): parse the flags with the module's settings class (runtime.settings),
# print them, stop.
PARSE_ONLY = """
import importlib, json, sys
import runtime.settings
load = runtime.settings.load
def load_settings(cls, prog, argv=None):
    print(json.dumps(load(cls, prog, argv).model_dump(), default=str))
    sys.exit(0)
runtime.settings.load = load_settings
module, main = sys.argv[1], sys.argv[2]
sys.argv = [module, *sys.argv[3:]]
importlib.import_module(main).main()
sys.exit(3)  # main() returned without parsing flags
"""


def parse_flags(module: str, argv: list[str]) -> dict:
    result = subprocess.run([sys.executable, "-c", PARSE_ONLY, module, MAINS[module], *argv],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{module} refused {argv}:\n{result.stderr[-2000:]}"
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def renders():
    return {s: render_stack(s) for s in ("staging", "prod-aws")}


def containers(render):
    for obj in render.kubernetes_objects():
        template = obj.manifest.get("spec", {}).get("template")
        if template:
            yield from template["spec"]["containers"]


def test_envoy_accepts_the_rendered_bootstrap(renders, tmp_path):
    # the TLS Secret's files, where the pod would have them mounted
    write_cert(trustme.CA().issue_cert("envoy.core2.svc"), tmp_path / "tls.crt",
               tmp_path / "tls.key")
    tls_stacks = set()
    for stack, render in renders.items():
        (cm,) = [o.manifest for o in render.kubernetes_objects()
                 if o.manifest["kind"] == "ConfigMap" and "envoy.json" in o.manifest["data"]]
        text = cm["data"]["envoy.json"]
        if ENVOY_TLS_DIR in text:
            tls_stacks.add(stack)
            text = text.replace(ENVOY_TLS_DIR, str(tmp_path))
        path = tmp_path / f"{stack}.json"
        path.write_text(text)
        result = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path)],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
    assert tls_stacks == {"prod-aws"}  # the stack that sets envoyTlsSecret serves TLS


def test_every_runtime_container_passes_flags_its_cli_accepts(renders):
    commands = {}
    for render in renders.values():
        for c in containers(render):
            if c.get("command", [])[:2] == ["python", "-m"]:
                argv = tuple(DOWNWARD_API.get(a, a) for a in c.get("args", []))
                commands[(c["command"][2], argv)] = c["name"]
    assert {module for module, _ in commands} == set(MAINS)
    for module, argv in commands:
        flags = parse_flags(module, list(argv))
        if module == "runtime.agent":
            assert flags["replica_idx"] == 2 and flags["host"] == "10.1.2.3"
        if module == "runtime.dataflow.engine":  # it calls the step models through Envoy
            assert flags["envoy"].split("://")[1] in ("envoy.core2.svc:9000",
                                                      "envoy.core2-staging.svc:9000")
        # reachable from Envoy, other pods and the kubelet, not only from inside the pod
        if "host" in flags and module != "runtime.agent":
            assert flags["host"] == "0.0.0.0", module


def test_kafka_settings_reach_the_dataflow_clients(renders, monkeypatch):
    """KAFKA_* from the pod spec end up in the services' Kafka settings."""
    from runtime.dataflow.engine import EngineSettings
    from runtime.settings import load

    render = renders["prod-aws"]
    (engine,) = [c for c in containers(render) if c["name"] == "engine"]
    env = {e["name"]: e["value"] if "value" in e
           else f"<{e['valueFrom']['secretKeyRef']['key']}>" for e in engine["env"]}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cfg = load(EngineSettings, "engine", engine["args"]).kafka_config()
    assert cfg.security_protocol == "SASL_SSL" and cfg.sasl_mechanism == "SCRAM-SHA-512"
    assert (cfg.sasl_username, cfg.sasl_password) == ("<username>", "<password>")
    assert json.dumps(cfg.bootstrap).count("amazonaws.com") == 2


def test_the_server_prestop_drain_passes_flags_the_drain_cli_accepts(renders):
    """The agent's preStop hook is a shell line (exec hooks get no $(VAR) expansion): with
    the index filled in as the shell would, `runtime.agent drain` accepts its flags, and it
    drains the same server at the same scheduler as the agent registered with."""
    hooks = []
    for render in renders.values():
        for c in containers(render):
            command = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
            if command and "runtime.agent drain" in command[-1]:
                hooks.append((c, command))
    assert hooks and {c["name"] for c, _ in hooks} == {"agent"}
    for agent, command in hooks:
        argv = shlex.split(command[2].replace('"$REPLICA_IDX"', "2"))
        assert argv[:5] == ["exec", "python", "-m", "runtime.agent", "drain"]
        flags = parse_flags("runtime.agent", argv[4:])
        args = agent["args"]
        assert flags["replica_idx"] == 2 and flags["timeout"] > 0
        assert flags["scheduler"] == args[args.index("--scheduler") + 1]
        assert flags["server_name"] == args[args.index("--server-name") + 1]
