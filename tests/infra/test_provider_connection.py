"""The dynamic providers follow the stack config's scheduler connection (no stale one from
the state), say clearly when the kubeconfig file is missing, and rename create-first."""

import contextlib

import pytest
from pulumi.dynamic import Config, ConfigureRequest

from components import scheduler_api as api
from components.providers import ModelProvider
from components.resources import Model
from tests.infra.harness import run_program

SPEC = {"storageUri": "gs://bucket/iris", "requirements": ["sklearn"]}


def props(address: str, name: str = "iris", spec: dict | None = None) -> dict:
    return {"name": name, "spec": spec or SPEC, "scheduler": {"address": address},
            "timeoutSeconds": 5, "retryGraceSeconds": 1}


def configured(**config) -> ModelProvider:
    provider = ModelProvider()
    provider.configure(ConfigureRequest(Config({f"core2:{k}": v for k, v in config.items()},
                                               "core2")))
    return provider


@pytest.fixture
def calls(monkeypatch):
    """Record which scheduler each operation connects to, and what it does there."""
    seen: list = []

    status = type("Status", (), {"version": 1, "state": "ModelAvailable", "reason": "",
                                 "ready": True, "spec_json": ""})()

    class Client:  # the calls the providers make on runtime.client.SchedulerClient
        def get(self, kind, name):
            return status

        def apply(self, kind, name, spec_json):
            seen.append(("apply", name))
            return status

        def delete(self, kind, name):
            seen.append(("delete", name))

        def wait(self, *args, **kwargs):
            return status

    @contextlib.contextmanager
    def connect(conn, timeout=30):
        seen.append(("connect", conn.address or conn.kubeconfig))
        yield Client()

    monkeypatch.setattr(api, "connect", connect)
    return seen


def test_delete_uses_the_address_the_config_names_now(calls):
    provider = configured(target="local", schedulerAddress="10.0.0.2:9004")
    provider.delete("model/iris", props("10.0.0.1:9004"))  # the state's, now stale
    assert calls == [("connect", "10.0.0.2:9004"), ("delete", "iris")]


def test_without_stack_config_the_state_connection_is_used(calls):
    ModelProvider().delete("model/iris", props("10.0.0.1:9004"))
    assert calls[0] == ("connect", "10.0.0.1:9004")


def test_a_moved_scheduler_alone_is_an_update_that_records_it_without_a_new_version(calls):
    provider = configured(target="local", schedulerAddress="10.0.0.2:9004")
    old, new = props("10.0.0.1:9004"), props("10.0.0.2:9004")
    diff = provider.diff("model/iris", old, new)
    assert diff.changes and diff.replaces == []
    outs = provider.update("model/iris", old, new).outs
    assert outs["scheduler"] == {"address": "10.0.0.2:9004"} and outs["ready"]
    assert calls == [("connect", "10.0.0.2:9004")]  # status only: nothing re-applied


def test_a_rename_creates_the_new_resource_before_deleting_the_old():
    diff = ModelProvider().diff("model/iris", props("a:1"), props("a:1", name="iris-v2"))
    assert diff.replaces == ["name"] and diff.delete_before_replace is False


def test_the_cluster_connection_follows_kubeconfig_context_and_namespace(monkeypatch):
    monkeypatch.setenv("HOME", "/home/ci")
    conn = api.Connection.from_stack_config({
        "target": "kubernetes", "resourceDelivery": "scheduler",
        "kubeconfig": "~/.kube/new.yaml", "context": "prod", "namespace": "ml"}.get)
    assert (conn.kubeconfig, conn.context, conn.namespace) == (
        "/home/ci/.kube/new.yaml", "prod", "ml")
    # CRD delivery has no scheduler connection: the providers are not used
    assert api.Connection.from_stack_config({"kubeconfig": "/k"}.get) is None


def test_a_missing_kubeconfig_file_names_the_config_key(tmp_path):
    missing = str(tmp_path / "nope.yaml")
    conn = api.Connection(kubeconfig=missing, namespace="core2")
    with pytest.raises(ValueError, match=r"kubeconfig: no file at .*nope\.yaml.*core2:kubeconfig"):
        run_program("dev", lambda: Model("iris", SPEC, conn) and {})
    from components.portforward import api_client

    with pytest.raises(ValueError, match="core2:kubeconfig"):
        api_client(missing, None)
    # the kubeconfig's contents (a secret) are not a path
    api.Connection(kubeconfig="apiVersion: v1\nkind: Config\n", namespace="x").check_files()

