"""The scheduler gives Envoy the pipeline gateway as an EDS endpoint, which must be an IP
address: a host name (a cluster Service's DNS name) is resolved at start."""

import pytest

from runtime.scheduler.__main__ import _endpoint


def test_a_gateway_host_name_is_resolved_to_an_ip():
    ep = _endpoint("localhost:9010", "localhost:9011")
    assert (ep.host, ep.http_port, ep.grpc_port) == ("127.0.0.1", 9010, 9011)
    assert _endpoint("10.0.0.7:9010", None).host == "10.0.0.7"


def test_a_name_that_never_resolves_stops_the_scheduler_with_the_flag_named():
    with pytest.raises(SystemExit, match="--pipeline-gateway-http: cannot resolve"):
        _endpoint("no-such-host.invalid:9010", None, resolve_for=0)
