"""Local mode's pipeline half: the embedded broker or Apache Kafka (unless an existing Kafka is
named) and the dataflow services (the engine, which calls the step models, and the pipeline
gateway)."""

import shutil

from runtime.broker import broker_argv, round_trip
from runtime.kafka_apache import ApacheKafka
from runtime.procs import free_port, http_ok, python_module, tcp_open


def start_dataflow(platform) -> None:
    p, cfg = platform.ports, platform.config
    if not platform.kafka_bootstrap:
        platform.kafka_bootstrap = f"127.0.0.1:{p['kafka']}"
        if cfg.kafkaBroker == "apache":
            # a fresh broker each `core2 up`, as the embedded one is: the scheduler's state
            # is what says which pipelines exist (a supervisor restart keeps the data)
            home = platform.run_dir / "kafka"
            shutil.rmtree(home, ignore_errors=True)
            argv, env = ApacheKafka(home, port=p["kafka"]).prepare(), {}
        else:
            argv, env = broker_argv(p["kafka"]), {"RUST_LOG": "warn"}
        platform._add("kafka-broker", argv,
                      lambda: tcp_open(p["kafka"]) and round_trip(platform.kafka_bootstrap, 5),
                      env=env,
                      # a produce/consume round trip every few seconds would load the broker
                      probe=lambda: tcp_open(p["kafka"]))
    common = ["--scheduler", platform.scheduler_address,
              "--kafka-bootstrap", platform.kafka_bootstrap,
              "--kafka-prefix", cfg.kafkaPrefix, "--kafka-namespace", cfg.kafkaNamespace,
              "--kafka-fetch-wait-ms", str(cfg.fetch_wait_ms())]
    # the engine calls step models itself (its in-process model gateway), through Envoy
    envoy = ["--envoy", platform.inference_url] + (
        ["--envoy-ca", platform.inference_ca] if platform.inference_ca else [])
    metrics = free_port()
    platform.metrics_ports["dataflow-engine"] = metrics
    platform._add("dataflow-engine", python_module(
        "runtime.dataflow.engine", *common, *envoy, "--metrics-port", str(metrics),
        "--metrics-host", "127.0.0.1"),
        lambda: http_ok(f"http://127.0.0.1:{metrics}/metrics"))
    platform._add("pipeline-gateway", python_module(
        "runtime.dataflow.pipelinegateway", *common, "--host", "127.0.0.1",
        "--http-port", str(p["pipelineGatewayHttp"]), "--grpc-port", str(p["pipelineGatewayGrpc"]),
        "--max-request-bytes", str(cfg.limits.maxRequestBytes)),
        lambda: http_ok(f"http://127.0.0.1:{p['pipelineGatewayHttp']}/v2/health/ready"))
