"""The Grafana dashboard (docs/grafana/core2.json) as a ConfigMap for Grafana's sidecar, which
imports every ConfigMap labelled `grafana_dashboard: "1"` in the namespaces it watches."""

import json
from pathlib import Path

from components.k8s import metadata

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "core2.json"
NAME = "core2-grafana-dashboard"
SIDECAR_LABEL = {"grafana_dashboard": "1"}


def render(namespace: str, path: Path = DASHBOARD) -> list[dict]:
    try:
        text = path.read_text()
        json.loads(text)  # a broken file would only show up as an empty panel in Grafana
    except (OSError, ValueError) as e:
        raise ValueError(f"grafana dashboard {path}: {e}") from None
    meta = metadata(NAME, namespace, "dashboard")
    meta["labels"].update(SIDECAR_LABEL)
    return [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
             "data": {path.name: text}}]
