"""Every shipped stack renders under Pulumi mocks into objects a real cluster would accept."""

import collections
import json

import kubernetes_validate
import pytest
import yaml

from components.envoy_bootstrap import XDS_CLUSTER
from infra.config import ROOT, StackConfig
from runtime.specs.common import SpecError
from runtime.specs.manifest import KINDS
from tests.infra.harness import STACK_NAMES, STACKS, render_stack, render_values

RENDERS: dict = {}


def rendered(stack: str):
    if stack not in RENDERS:
        RENDERS[stack] = render_stack(stack)
    return RENDERS[stack]


def by_kind(render, kind: str, name: str | None = None) -> list[dict]:
    return [o.manifest for o in render.kubernetes_objects() if o.manifest["kind"] == kind
            and (name is None or o.manifest["metadata"]["name"] == name)]


def test_all_five_environments_ship():
    assert STACK_NAMES == ["local", "onprem", "prod-aws", "prod-gcp", "staging"]


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_no_urn_collides(stack):
    urns = rendered(stack).urns
    dupes = [u for u, n in collections.Counter(urns).items() if n > 1]
    assert not dupes and urns


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_kubernetes_objects_validate_against_the_configured_version(stack):
    render = rendered(stack)
    version = render.config.kubernetesVersion
    checked = 0
    for obj in render.builtin_objects():  # custom resources: checked by their own tests
        m = obj.manifest
        try:
            kubernetes_validate.validate(m, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{m['kind']}/{m['metadata']['name']}: {path}: {e.message}")
        checked += 1
    if render.config.target == "kubernetes":
        assert checked >= 20
        # everything in the stack's namespace, but the dashboard where Grafana looks for it
        elsewhere = {(o.manifest["kind"], o.manifest["metadata"].get("namespace"))
                     for o in render.kubernetes_objects()
                     if o.manifest["kind"] not in ("Namespace", "CustomResourceDefinition")
                     and o.manifest["metadata"].get("namespace") != render.config.namespace}
        dashboard_ns = render.config.grafanaDashboardNamespace
        assert elsewhere == ({("ConfigMap", dashboard_ns)} if dashboard_ns else set())


def test_the_validator_rejects_a_broken_object():
    """Guards the test above: strict schemas refuse unknown and mistyped fields."""
    deployment = by_kind(rendered("staging"), "Deployment", "envoy")[0]
    broken = json.loads(json.dumps(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.31", strict=True)


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_core2_resources_carry_valid_specs(stack):
    """Local stacks go through the scheduler API; cluster stacks declare mlops.seldon.io
    objects in their namespace (and no scheduler connection in the state)."""
    render = rendered(stack)
    local = render.config.target == "local"
    found = render.of_type("pulumi-python:dynamic/core2:" if local
                           else "kubernetes:mlops.seldon.io/v1alpha1:")
    kinds = collections.Counter(r.type.rsplit(":", 1)[1] for r in found)
    expected = {k: len(render.config.resources_of(k)) for k in KINDS if k != "Server"}
    assert {k: kinds.get(k, 0) for k in expected} == expected
    for r in found:
        kind = r.type.rsplit(":", 1)[1]
        KINDS[kind].parse(r.inputs["spec"])  # raises naming the field if not
        if local:
            assert r.inputs["scheduler"] == {"address": render.config.schedulerAddress,
                                             "pod": "scheduler-0", "port": 9004}
        else:
            assert "scheduler" not in r.inputs
            assert r.inputs["metadata"]["namespace"] == render.config.namespace


@pytest.mark.parametrize("stack", ["staging", "onprem"])
def test_strimzi_resources_have_what_they_need(stack):
    render = rendered(stack)
    (kafka,) = by_kind(render, "Kafka")
    (pool,) = by_kind(render, "KafkaNodePool")
    assert kafka["apiVersion"] == pool["apiVersion"] == render.config.strimziApiVersion
    ann = kafka["metadata"]["annotations"]
    assert ann["strimzi.io/kraft"] == "enabled" and ann["strimzi.io/node-pools"] == "enabled"
    assert ann["pulumi.com/waitFor"] == "condition=Ready"
    listeners = kafka["spec"]["kafka"]["listeners"]
    assert listeners and all({"name", "port", "type", "tls"} <= set(li) for li in listeners)
    assert "zookeeper" not in kafka["spec"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert pool["spec"]["replicas"] == render.config.kafkaReplicas
    (volume,) = pool["spec"]["storage"]["volumes"]
    assert volume["type"] == "persistent-claim" and volume["kraftMetadata"] == "shared"
    assert volume["size"] == render.config.kafkaStorageSize
    assert volume["class"] == render.config.storageClass
    (chart,) = render.of_type("kubernetes:helm.sh/v4:Chart")
    assert chart.inputs["version"] == render.config.strimziChartVersion
    assert chart.inputs["namespace"] == render.config.namespace
    # the dataflow services talk to the cluster's bootstrap service
    engine = by_kind(render, "Deployment", "engine")[0]
    args = engine["spec"]["template"]["spec"]["containers"][0]["args"]
    bootstrap = args[args.index("--kafka-bootstrap") + 1]
    assert bootstrap == f"core2-kafka-bootstrap.{render.config.namespace}.svc:9092"
    # topics are replicated as widely as the cluster allows (at most 3)
    replication = args[args.index("--kafka-replication") + 1]
    assert replication == str(min(3, render.config.kafkaReplicas))


@pytest.mark.parametrize("stack", ["prod-aws", "prod-gcp"])
def test_external_kafka_takes_credentials_from_secrets(stack):
    render = rendered(stack)
    assert not by_kind(render, "Kafka") and not render.of_type("kubernetes:helm.sh")
    assert {d["metadata"]["name"] for d in by_kind(render, "Deployment")} >= {
        "engine", "pipelinegateway"}
    assert not by_kind(render, "Deployment", "modelgateway")  # it runs inside the engine
    for name in ("engine", "pipelinegateway"):
        (dep,) = by_kind(render, "Deployment", name)
        container = dep["spec"]["template"]["spec"]["containers"][0]
        args = container["args"]
        assert args[args.index("--kafka-bootstrap") + 1] == render.config.kafkaBootstrap
        assert args[args.index("--kafka-namespace") + 1] == render.config.namespace
        env = {e["name"]: e for e in container["env"]}
        assert env["KAFKA_SECURITY_PROTOCOL"]["value"] == "SASL_SSL"
        assert env["KAFKA_SASL_MECHANISM"]["value"] == render.config.kafkaSaslMechanism
        for var in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == render.config.kafkaSaslSecret and "value" not in env[var]
        assert dep["spec"]["replicas"] == render.config.dataflowReplicas[name]
        assert args[args.index("--kafka-replication") + 1] == "3"


def _containers(render):
    for obj in render.kubernetes_objects():
        spec = obj.manifest.get("spec", {}).get("template", {}).get("spec")
        if spec:
            yield from spec["containers"]


def test_scheduler_token_and_envoy_tls_reach_every_service_that_needs_them():
    render = rendered("prod-aws")
    cfg = render.config
    token_users = set()
    for c in _containers(render):
        env = {e["name"]: e for e in c.get("env", [])}
        if "CORE2_SCHEDULER_TOKEN" in env:
            ref = env["CORE2_SCHEDULER_TOKEN"]["valueFrom"]["secretKeyRef"]
            assert ref == {"name": cfg.schedulerTokenSecret, "key": "token"}
            token_users.add(c["name"])
    assert token_users == {"scheduler", "engine", "pipelinegateway", "agent", "controller"}

    (envoy,) = by_kind(render, "Deployment", "envoy")
    pod = envoy["spec"]["template"]["spec"]
    [tls] = [v for v in pod["volumes"] if v.get("secret")]
    assert tls["secret"]["secretName"] == cfg.envoyTlsSecret
    assert {"name": tls["name"], "mountPath": "/etc/envoy/tls", "readOnly": True} in \
        pod["containers"][0]["volumeMounts"]
    _, boot = envoy_bootstrap(render)
    [chain] = boot["static_resources"]["listeners"][0]["filter_chains"]
    tls_context = chain["transport_socket"]["typed_config"]["common_tls_context"]
    assert tls_context["tls_certificates"][0]["private_key"]["filename"] == \
        "/etc/envoy/tls/tls.key"

    staging = rendered("staging")
    assert not any("CORE2_SCHEDULER_TOKEN" in {e["name"] for e in c.get("env", [])}
                   for c in _containers(staging))


def test_the_engine_calls_models_on_envoys_https_and_verifies_it_with_the_ca_alone():
    """With envoyTlsSecret the engine (which calls the step models) dials https and gets the
    Secret's ca.crt, mounted read-only and named by CORE2_ENVOY_TLS_CA; no other dataflow
    service gets it, and without TLS it dials plain http."""
    render = rendered("prod-aws")
    (engine,) = by_kind(render, "Deployment", "engine")
    pod = engine["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"][c["args"].index("--envoy") + 1] == "https://envoy.core2.svc:9000"
    env = {e["name"]: e.get("value") for e in c["env"]}
    [ca] = [v for v in pod["volumes"] if v.get("secret")]
    assert ca["secret"]["secretName"] == render.config.envoyTlsSecret
    # the CA only, never the key
    assert ca["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]
    mount = next(m for m in c["volumeMounts"] if m["name"] == ca["name"])
    assert mount["readOnly"] is True
    assert env["CORE2_ENVOY_TLS_CA"] == f"{mount['mountPath']}/ca.crt"
    (gateway,) = by_kind(render, "Deployment", "pipelinegateway")
    assert not [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v.get("secret")]

    staging = rendered("staging")
    (engine,) = by_kind(staging, "Deployment", "engine")
    (c,) = engine["spec"]["template"]["spec"]["containers"]
    assert c["args"][c["args"].index("--envoy") + 1] == \
        f"http://envoy.{staging.config.namespace}.svc:9000"
    assert "CORE2_ENVOY_TLS_CA" not in {e["name"] for e in c["env"]}


def envoy_bootstrap(render) -> tuple[dict, dict]:
    """(the bootstrap ConfigMap, its parsed envoy.json); the name carries a content hash."""
    (cm,) = [o for o in by_kind(render, "ConfigMap")
             if o["metadata"]["name"].startswith("envoy-bootstrap-")]
    return cm, json.loads(cm["data"]["envoy.json"])


def test_envoy_bootstrap_points_at_the_scheduler_and_pods_roll_on_change():
    render = rendered("staging")
    cm, boot = envoy_bootstrap(render)
    clusters = {c["name"]: c for c in boot["static_resources"]["clusters"]}
    cluster = clusters[XDS_CLUSTER]
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "scheduler.core2-staging.svc", "port_value": 9002}
    assert boot["dynamic_resources"]["ads_config"]["api_type"] == "DELTA_GRPC"  # incremental xDS
    assert boot["dynamic_resources"]["cds_config"]["ads"] == {}
    listener = next(x for x in boot["static_resources"]["listeners"]
                    if x["name"] == "core2_ingress")
    assert listener["address"]["socket_address"]["port_value"] == 9000
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["scoped_routes"]["scoped_rds"]["scoped_rds_config_source"]["ads"] == {}
    assert hcm["scoped_routes"]["rds_config_source"]["ads"] == {}
    (dep,) = by_kind(render, "Deployment", "envoy")
    pod = dep["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == "envoyproxy/envoy:v1.40.0"
    assert {"name": "bootstrap", "configMap": {"name": cm["metadata"]["name"]}} in \
        pod["spec"]["volumes"]
    # another namespace means another bootstrap, hence another ConfigMap and pod template
    other = render_values("staging", {**_values("staging"), "namespace": "elsewhere"})
    (dep2,) = by_kind(other, "Deployment", "envoy")
    cm2, _ = envoy_bootstrap(other)
    assert cm2["metadata"]["name"] != cm["metadata"]["name"]
    key = "core2.io/bootstrap-checksum"
    assert pod["metadata"]["annotations"][key] != \
        dep2["spec"]["template"]["metadata"]["annotations"][key]


def test_scheduler_is_one_stateful_replica_with_storage_and_probes():
    render = rendered("prod-aws")
    (sts,) = by_kind(render, "StatefulSet", "scheduler")
    assert sts["spec"]["replicas"] == 1
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["storageClassName"] == "gp3"
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    (c,) = sts["spec"]["template"]["spec"]["containers"]
    assert c["command"] == ["python", "-m", "runtime.scheduler"]
    assert c["args"][c["args"].index("--data-dir") + 1] == "/var/lib/core2"
    assert {"/var/lib/core2"} <= {m["mountPath"] for m in c["volumeMounts"]}
    assert c["readinessProbe"]["tcpSocket"]["port"] == 9004
    # the scheduler resolves the gateway Service's name to the IP Envoy's EDS needs
    (gateway,) = by_kind(render, "Service", "pipelinegateway")
    host = f"{gateway['metadata']['name']}.{gateway['metadata']['namespace']}.svc"
    assert c["args"][c["args"].index("--pipeline-gateway-http") + 1] == f"{host}:9010"
    assert c["args"][c["args"].index("--pipeline-gateway-grpc") + 1] == f"{host}:9011"
    annotations = sts["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "9006"


def test_network_policies_admit_only_what_each_service_needs():
    render = rendered("prod-aws")
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind(render, "NetworkPolicy")}
    assert policies["core2-default-deny"]["ingress"] == []
    sched = policies["core2-scheduler"]["ingress"]
    admitted = {r["ports"][0]["port"]: r["from"][0] for r in sched}
    assert admitted[9002]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "envoy"
    assert admitted[9005]["podSelector"]["matchLabels"] == {"core2.io/role": "server"}
    assert set(admitted[9004]["podSelector"]["matchExpressions"][0]["values"]) == {
        "engine", "pipelinegateway"}
    assert admitted[9006]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    # Prometheus may scrape the engine, which takes no other traffic
    scrape = policies["core2-dataflow-metrics"]
    assert scrape["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "engine",
                                                     "app.kubernetes.io/part-of": "core2"}}
    assert scrape["ingress"] == [{"from": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}],
        "ports": [{"protocol": "TCP", "port": 9006}]}]
    (engine,) = by_kind(render, "Deployment", "engine")
    assert engine["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9006"
    # every server pod carries the label the policies select on
    for sts in by_kind(render, "StatefulSet"):
        if sts["metadata"]["name"] != "scheduler":
            assert sts["spec"]["template"]["metadata"]["labels"]["core2.io/role"] == "server"


def _selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()) and all(
        (labels.get(e["key"]) in e["values"]) == (e["operator"] == "In")
        for e in selector.get("matchExpressions", []))


def _admits(policies: list[dict], to: dict, port: int, source: dict | None,
             source_namespace: str) -> bool:
    """Kubernetes' ingress semantics: a pod no policy selects takes everything; otherwise a
    connection needs a rule of a policy selecting the pod whose peers and ports both match.
    `source`: the client pod's labels (None: outside the cluster, e.g. a load balancer)."""
    own = [p for p in policies if _selects(p["spec"]["podSelector"], to)]
    ns_labels = {"kubernetes.io/metadata.name": source_namespace}
    namespace = policies[0]["metadata"]["namespace"]

    def peer(p: dict) -> bool:
        if "namespaceSelector" in p:
            return source is not None and _selects(p["namespaceSelector"], ns_labels)
        return source is not None and source_namespace == namespace and _selects(
            p["podSelector"], source)

    return not own or any(
        ("from" not in rule or any(peer(f) for f in rule["from"]))
        and ("ports" not in rule or any(x["port"] == port for x in rule["ports"]))
        for p in own for rule in p["spec"]["ingress"])


def test_the_engine_reaches_envoy_and_the_scheduler_and_takes_only_scrapes():
    """The engine calls the step models through Envoy and the scheduler's API; nothing but
    Prometheus (in the monitoring namespace) connects to it."""
    render = rendered("prod-aws")
    policies = by_kind(render, "NetworkPolicy")
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in by_kind(render, "Deployment") + by_kind(render, "StatefulSet")}
    ns = render.config.namespace
    engine, envoy, scheduler, gateway = (pods[n] for n in (
        "engine", "envoy", "scheduler", "pipelinegateway"))
    assert _admits(policies, envoy, 9000, engine, ns)
    assert _admits(policies, scheduler, 9004, engine, ns)
    prometheus = {"app.kubernetes.io/name": "prometheus"}
    assert _admits(policies, engine, 9006, prometheus, "monitoring")
    # guards the helper: what the policies deny, it denies
    assert not _admits(policies, scheduler, 9002, engine, ns)  # xDS is Envoy's alone
    assert not _admits(policies, pods["mlserver"], 9500, engine, ns)  # models: through Envoy
    for source, source_ns in ((envoy, ns), (gateway, ns), (prometheus, "elsewhere"),
                              (None, "")):
        assert not _admits(policies, engine, 9006, source, source_ns)


def test_servers_get_gpus_node_selectors_and_their_agent_flags():
    render = rendered("prod-aws")
    (gpu,) = by_kind(render, "StatefulSet", "triton-gpu")
    pod = gpu["spec"]["template"]["spec"]
    triton, agent = pod["containers"]
    assert triton["name"] == "triton" and triton["image"].startswith("nvcr.io/nvidia/tritonserver:")
    assert "--model-control-mode=explicit" in triton["args"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "g5.xlarge"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in \
        pod["tolerations"]
    args = agent["args"]
    flag = dict(zip(args[::2], args[1::2], strict=True))
    assert flag["--server-name"] == "triton-gpu" and flag["--memory"] == "16Gi"
    assert flag["--replica-idx"] == "$(REPLICA_IDX)" and flag["--host"] == "$(POD_IP)"
    assert "onnx" in flag["--capabilities"].split(",")
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in agent["env"]
           if "fieldRef" in e["valueFrom"]}
    assert env["REPLICA_IDX"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert gpu["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"] == {
        "storage": "50Gi"}
    # the autoscaled server leaves its replica count to the HPA
    (mls,) = by_kind(render, "StatefulSet", "mlserver")
    assert "replicas" not in mls["spec"]
    (hpa,) = by_kind(render, "HorizontalPodAutoscaler", "mlserver")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)


def test_envoy_service_type_follows_the_environment():
    types = {s: by_kind(rendered(s), "Service", "envoy")[0]["spec"]
             for s in ("staging", "prod-aws", "prod-gcp", "onprem")}
    assert types["staging"]["type"] == "ClusterIP"
    assert types["onprem"]["type"] == "NodePort"
    assert types["prod-aws"]["loadBalancerSourceRanges"] == ["10.0.0.0/8", "203.0.113.0/24"]
    assert types["prod-gcp"]["type"] == "LoadBalancer"


def test_local_target_deploys_only_resources():
    render = rendered("local")
    assert not render.of_type("kubernetes:")
    assert len(render.of_type("pulumi-python:dynamic/core2:")) == 4
    assert render.outputs["schedulerAddress"] == "127.0.0.1:9004"


def test_kubernetes_target_needs_its_own_kubeconfig():
    values = {k: v for k, v in _values("staging").items() if k != "kubeconfig"}
    with pytest.raises(SpecError, match="kubeconfig: required"):
        render_values("staging", values)


def test_bad_config_names_the_field():
    values = _values("staging")
    values["servers"] = [{"name": "mlserver", "replicas": 1, "memroy": "1Gi"}]
    with pytest.raises(SpecError, match=r"config\.servers\.0\.memroy: unknown field"):
        render_values("staging", values)
    values = _values("staging")
    values["models"] = [{"name": "iris", "spec": {"storageUri": "s3://x", "replicas": -1}}]
    with pytest.raises(SpecError, match=r"models\[0\]\.spec\.replicas"):
        render_values("staging", values)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("dataflowReplicas", {"engine": 2, "modelgateway": 2},
     "dataflowReplicas.modelgateway: the model gateway runs inside the engine now; "
     "scale dataflowReplicas.engine instead"),
    ("resources", {"modelgateway": {"cpuLimit": "2"}},
     "resources.modelgateway: the model gateway runs inside the engine now; "
     "size resources.engine instead"),
    ("dataflowReplicas", {"engines": 2},
     "dataflowReplicas.engines: unknown service; known: engine, pipelinegateway"),
    ("resources", {"pipelinegatway": {}}, "resources.pipelinegatway: unknown service; "
     "known: scheduler, envoy, controller, engine, pipelinegateway"),
    ("resources", {"engine": {"memoryLimt": "2Gi"}}, "resources.engine: unknown field(s) "
     "memoryLimt; known: cpuRequest, memoryRequest, cpuLimit, memoryLimit"),
    ("dataflowReplicas", {"engine": 0}, "dataflowReplicas.engine: Input should be greater "
     "than or equal to 1"),
])
def test_dataflow_services_the_platform_does_not_run_are_refused(key, value, message):
    """A stack written for the separate model gateway (or with a typo) fails at preview,
    naming the key, instead of deploying without the setting."""
    with pytest.raises(SpecError) as refused:
        render_values("staging", {**_values("staging"), key: value})
    assert message in str(refused.value)


def test_resources_size_the_engine_which_defaults_to_room_for_the_model_calls():
    values = {**_values("staging"), "resources": {"engine": {"memoryLimit": "3Gi"}}}
    (engine,) = by_kind(render_values("staging", values), "Deployment", "engine")
    limits = engine["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["memory"] == "3Gi" and limits["cpu"] == "2"  # the rest: the defaults
    (gateway,) = by_kind(rendered("staging"), "Deployment", "pipelinegateway")
    (engine,) = by_kind(rendered("staging"), "Deployment", "engine")
    sizes = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["resources"]
             for d in (engine, gateway)}
    assert sizes["engine"] == {"requests": {"cpu": "300m", "memory": "384Mi"},
                               "limits": {"cpu": "2", "memory": "1536Mi"}}
    assert sizes["pipelinegateway"]["limits"] == {"cpu": "1", "memory": "1Gi"}


def test_model_version_key_changes_with_the_model_but_not_with_scaling():
    def key(spec_change: dict) -> str:
        values = _values("staging")
        values["models"][0]["spec"].update(spec_change)
        (iris,) = [r for r in render_values("staging", values).resources
                   if r.type.endswith(":Model") and r.inputs["metadata"]["name"] == "iris"]
        return iris.inputs["metadata"]["annotations"]["core2.io/version-key"]

    base = key({})
    assert key({"replicas": 4}) == base
    assert key({"storageUri": "gs://core2-models/iris-sklearn/v3"}) != base


def test_project_file_declares_typed_config_with_defaults_matching_the_program():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    assert project["main"] == "infra/" and project["stackConfigDir"] == "stacks"
    declared = project["config"]
    for key, decl in declared.items():
        assert key in StackConfig.model_fields, key
        assert decl["type"] in {"string", "integer", "boolean", "array"}, key
        assert decl.get("description"), key
        if decl["type"] == "array":
            assert decl["items"]["type"] in {"string", "integer", "boolean"}
        # Pulumi refuses a stack that lacks a declared key without a default
        assert "default" in decl, key
        program_default = StackConfig.model_fields[key].default
        assert decl["default"] == ("" if program_default is None else program_default), key
    # every stack sets only known keys, with the declared type
    py_types = {"string": str, "integer": int, "boolean": bool, "array": list}
    for stack in STACK_NAMES:
        for key, value in _values(stack).items():
            assert key in StackConfig.model_fields, f"{stack}: {key}"
            if key in declared:
                assert isinstance(value, py_types[declared[key]["type"]]), f"{stack}: {key}"


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_project_defaults_mean_what_the_program_defaults_mean(stack):
    from infra.config import parse, project_defaults

    values = _values(stack)
    assert parse({**project_defaults(), **values}) == parse(values)


def _values(stack: str) -> dict:
    from infra.config import stack_values

    return json.loads(json.dumps(stack_values(STACKS / f"Pulumi.{stack}.yaml")))


@pytest.mark.parametrize("stack", STACK_NAMES)
def test_kubernetes_version_is_one_the_validator_ships(stack):
    from kubernetes_validate.utils import all_versions, major_minor

    shipped = {major_minor(v) for v in all_versions()}
    assert rendered(stack).config.kubernetesVersion in shipped


def test_private_registry_credentials_reach_every_pod():
    render = rendered("onprem")
    templates = [o.manifest["spec"]["template"]["spec"] for o in render.kubernetes_objects()
                 if "template" in o.manifest.get("spec", {})]
    assert len(templates) >= 6
    assert all(t["imagePullSecrets"] == [{"name": "internal-registry"}] for t in templates)
