"""Reaching the scheduler: the kubeconfig/context a stack names, never the ambient one."""

import pytest

from components.portforward import api_client
from components.scheduler_api import Connection

KUBECONFIG = """
apiVersion: v1
kind: Config
current-context: staging
clusters:
- name: staging
  cluster: {server: "https://staging.example.com:6443", insecure-skip-tls-verify: true}
- name: prod
  cluster: {server: "https://prod.example.com:6443", insecure-skip-tls-verify: true}
users:
- name: ci
  user: {token: abc}
contexts:
- name: staging
  context: {cluster: staging, user: ci}
- name: prod
  context: {cluster: prod, user: ci}
"""


def test_kubeconfig_contents_or_path_with_a_chosen_context(tmp_path):
    assert api_client(KUBECONFIG, "prod").configuration.host == "https://prod.example.com:6443"
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG)
    assert api_client(str(path), None).configuration.host == \
        "https://staging.example.com:6443"


def test_no_kubeconfig_means_no_cluster(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "ambient"))
    with pytest.raises(ValueError, match="kubeconfig: required"):
        api_client(None, "prod")
    with pytest.raises(ValueError, match="give an address, or a kubeconfig and namespace"):
        Connection(context="prod").validate()
