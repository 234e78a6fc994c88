"""The Grafana dashboard: an importable file, shipped by the Platform for Grafana's sidecar
when asked."""

import json
import re

from components import dashboard
from components.platform import Platform, PlatformArgs
from tests.infra.harness import run_program

IMAGE = "ghcr.io/core2/core2:0.1.0"


def _configmaps(render) -> list[dict]:
    return [o.manifest for o in render.kubernetes_objects() if o.manifest["kind"] == "ConfigMap"]


def test_the_dashboard_file_is_importable():
    board = json.loads(dashboard.DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"] for v in board["templating"]["list"]}
    assert {"datasource", "model", "pipeline"} <= variables
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert len({p["id"] for p in board["panels"]}) == len(board["panels"])
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["type"] == "prometheus"
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used)


def test_the_platform_ships_the_dashboard_only_when_asked():
    def program(dashboard_ns):
        return lambda: Platform("core2", PlatformArgs(
            namespace="seldon", image=IMAGE, grafana_dashboard_namespace=dashboard_ns)) and {}

    without = _configmaps(run_program("dev", program(None)))
    assert without and dashboard.NAME not in {c["metadata"]["name"] for c in without}
    (cm,) = [c for c in _configmaps(run_program("dev", program("monitoring")))
             if c["metadata"]["name"] == dashboard.NAME]
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["core2.json"]) == json.loads(dashboard.DASHBOARD.read_text())
