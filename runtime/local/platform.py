"""The local platform: scheduler, Envoy, model servers with their agents, broker and dataflow,
each a supervised process on loopback logging to `<run-dir>/logs/<name>.log`."""

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from runtime.envoy import envoy_argv, write_bootstrap
from runtime.local.config import LocalConfig, LocalServer
from runtime.local.roots import ROOTS_FILE, admit_folder, local_fetch_rules
from runtime.local.state import STATE_FILE, start_times
from runtime.local.state import pid_alive as pid_alive  # re-exported: tests import them here
from runtime.local.state import read_state as read_state
from runtime.procs import Service, free_port, http_ok, python_module, tcp_open

START_TIMEOUT_S = 60


class Platform:
    def __init__(self, run_dir: Path, config: LocalConfig | None = None):
        self.run_dir = Path(run_dir).resolve()
        self.config = config or LocalConfig()
        self.logs = self.run_dir / "logs"
        self.services: dict[str, Service] = {}
        self.checks: dict[str, Callable[[], bool]] = {}
        # what the supervisor asks a running service every few seconds (default: its check)
        self.probes: dict[str, Callable[[], bool]] = {}
        ports = self.config.ports.model_dump()
        self.ports = {k: v or free_port() for k, v in ports.items()}
        self.kafka_bootstrap = self.config.kafkaBootstrap
        self.replicas: dict[str, dict] = {}
        self.servers: dict[str, LocalServer] = {}  # by name: config and applied servers
        self.metrics_ports: dict[str, int] = {}    # other services' /metrics, by service

    # ---- addresses -----------------------------------------------------------------------
    @property
    def inference_url(self) -> str:
        scheme = "https" if self.config.envoyTls else "http"
        return f"{scheme}://127.0.0.1:{self.ports['envoy']}"

    @property
    def inference_ca(self) -> str | None:
        """The CA file clients verify Envoy's certificate with (TLS on), else None."""
        return str(self.config.envoyTls.ca) if self.config.envoyTls else None

    @property
    def scheduler_address(self) -> str:
        return f"127.0.0.1:{self.ports['schedulerApi']}"

    def endpoints(self) -> dict[str, str]:
        out = {"inference (REST+gRPC, Envoy)": f"127.0.0.1:{self.ports['envoy']}",
               "scheduler API (gRPC)": self.scheduler_address,
               "scheduler /metrics": f"http://127.0.0.1:{self.ports['schedulerMetrics']}/metrics",
               "Envoy admin and stats": f"http://127.0.0.1:{self.ports['envoyAdmin']}"}
        if self.config.pipelines:
            out["pipeline gateway (REST)"] = f"http://127.0.0.1:{self.ports['pipelineGatewayHttp']}"
            out["pipeline gateway (gRPC)"] = f"127.0.0.1:{self.ports['pipelineGatewayGrpc']}"
            out["pipeline gateway /metrics"] = (
                f"http://127.0.0.1:{self.ports['pipelineGatewayHttp']}/metrics")
        out["feedback (REST)"] = f"http://127.0.0.1:{self.ports['feedbackHttp']}"
        for name, port in self.metrics_ports.items():
            out[f"{name} /metrics"] = f"http://127.0.0.1:{port}/metrics"
        if self.kafka_bootstrap:
            out["Kafka bootstrap"] = self.kafka_bootstrap
        return out

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self, progress: Callable[[str], None] = lambda _: None) -> "Platform":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._start_scheduler()
            self._start_envoy()
            for server in self.config.servers:
                self._start_server(server)
            if self.config.pipelines:
                self._start_dataflow()
            if self.config.kube:
                self._start_controller()
            self.wait_healthy(progress)
            self.wait_servers_connected([s.name for s in self.config.servers], progress)
            self.register_autoscaled_servers()
        except BaseException:
            self.stop()
            raise
        self.save_state()
        return self

    def _add(self, name: str, argv: list[str], check: Callable[[], bool],
             env: dict | None = None, probe: Callable[[], bool] | None = None) -> Service:
        tracing = self.config.tracing.env() if self.config.tracing else {}
        svc = Service(name, argv, self.logs,
                      env={"PYTHONUNBUFFERED": "1", **tracing, **(env or {})})
        self.services[name] = svc.start()
        self.checks[name] = check
        self.probes[name] = probe or check
        return svc

    def _start_scheduler(self) -> None:
        p = self.ports
        args = ["--data-dir", str(self.run_dir / "scheduler"), "--api-port",
                str(p["schedulerApi"]), "--agent-port", str(p["schedulerAgent"]),
                "--xds-port", str(p["schedulerXds"]), "--metrics-port", str(p["schedulerMetrics"]),
                "--replica-lost-after", str(self.config.replicaLostAfterSeconds),
                *self.config.autoscaling.scheduler_args(),
                *self.config.limits.scheduler_args()]
        args += ["--feedback-http-port", str(p["feedbackHttp"]),
                 "--feedback-grpc-port", str(p["feedbackGrpc"])]
        if self.config.pipelines:
            args += ["--pipeline-gateway-http", f"127.0.0.1:{p['pipelineGatewayHttp']}",
                     "--pipeline-gateway-grpc", f"127.0.0.1:{p['pipelineGatewayGrpc']}",
                     # feedback is also produced to its topic (the broker may come later)
                     "--feedback-kafka", "--kafka-bootstrap",
                     self.kafka_bootstrap or f"127.0.0.1:{p['kafka']}",
                     "--kafka-prefix", self.config.kafkaPrefix,
                     "--kafka-namespace", self.config.kafkaNamespace]
        self._add("scheduler", python_module("runtime.scheduler", *args),
                  lambda: all(tcp_open(p[k]) for k in ("schedulerApi", "schedulerAgent",
                                                        "schedulerXds", "feedbackHttp")))

    def _start_envoy(self) -> None:
        p = self.ports
        tls = self.config.envoyTls
        config = write_bootstrap(self.run_dir / "envoy.json", listen_port=p["envoy"],
                                 admin_port=p["envoyAdmin"], xds_host="127.0.0.1",
                                 xds_port=p["schedulerXds"],
                                 tls_cert_file=str(tls.certFile) if tls else None,
                                 tls_key_file=str(tls.keyFile) if tls else None,
                                 limits=self.config.limits,
                                 otlp=tr.otlpEndpoint if (tr := self.config.tracing) else None,
                                 sample_percent=tr.samplePercent if tr else 100.0)
        self._add("envoy", envoy_argv(config),
                  lambda: http_ok(f"http://127.0.0.1:{p['envoyAdmin']}/ready"))

    def add_server(self, server: LocalServer, progress: Callable[[str], None] = lambda _: None):
        """Start another server's replicas on a running platform (e.g. `core2 apply` of a
        Server manifest in local mode)."""
        names = self._start_server(server)
        self.wait_healthy(progress, only=names)
        self.wait_servers_connected([server.name], progress)
        self.save_state()

    def _start_server(self, server: LocalServer) -> list[str]:
        self.servers[server.name] = server
        started = []
        for idx in range(server.replicas):
            started += self.start_replica(server, idx)
        return started

    def start_replica(self, server: LocalServer, idx: int) -> list[str]:
        """Start one replica (model server + agent); returns its services' names."""
        base = f"{server.name}-{idx}"
        home = self.run_dir / "servers" / base
        (home / "repository").mkdir(parents=True, exist_ok=True)
        ports = {k: free_port() for k in ("http", "grpc", "metrics", "agent_http",
                                            "agent_grpc", "agent_metrics")}
        self.replicas[base] = ports
        self.metrics_ports[f"{base}-{server.serverConfig}"] = ports["metrics"]
        self.metrics_ports[f"{base}-agent"] = ports["agent_metrics"]
        # MLServer with core2's name hook, or Triton (runtime.agent.tritonserver)
        launcher = ("runtime.agent.tritonserver" if server.serverConfig == "triton"
                    else "runtime.agent.modelserver")
        self._add(f"{base}-{server.serverConfig}", python_module(
            launcher, "--repository", str(home / "repository"),
            "--http-port", str(ports["http"]), "--grpc-port", str(ports["grpc"]),
            "--metrics-port", str(ports["metrics"])),
            lambda: http_ok(f"http://127.0.0.1:{ports['http']}/v2/health/ready"))
        self._add(f"{base}-agent", python_module(
            "runtime.agent", "--scheduler", f"127.0.0.1:{self.ports['schedulerAgent']}",
            "--server-name", server.name, "--replica-idx", str(idx),
            "--capabilities", ",".join(server.all_capabilities()),
            "--memory", str(server.memory_bytes),
            "--over-commit", str(server.overCommitPercentage), "--host", "127.0.0.1",
            "--server-http-port", str(ports["http"]), "--server-grpc-port", str(ports["grpc"]),
            "--http-port", str(ports["agent_http"]), "--grpc-port", str(ports["agent_grpc"]),
            "--metrics-port", str(ports["agent_metrics"]),
            "--server-metrics-port", str(ports["metrics"]),
            "--repository", str(home / "repository"), "--cache-dir", str(home / "cache"),
            "--fetch-rules", local_fetch_rules(server).model_dump_json(),
            "--local-roots-file", str(self.run_dir / ROOTS_FILE),
            "--server-kind", server.serverConfig,
            "--load-report-seconds", str(self.config.autoscaling.loadReportSeconds)),
            lambda: http_ok(f"http://127.0.0.1:{ports['agent_metrics']}/ready"))
        return [f"{base}-{server.serverConfig}", f"{base}-agent"]

    def stop_replica(self, server: LocalServer, idx: int) -> list[str]:
        """Stop one replica (agent first, so the scheduler sees it go); returns the names of
        the services stopped. Its models must have moved first (the scheduler drains it)."""
        base = f"{server.name}-{idx}"
        names = [f"{base}-agent", f"{base}-{server.serverConfig}"]
        for name in names:
            if svc := self.services.pop(name, None):
                svc.stop()
            self.checks.pop(name, None)
            self.probes.pop(name, None)
            self.metrics_ports.pop(name, None)
        self.replicas.pop(base, None)
        return names

    def running_replicas(self, server: str) -> list[int]:
        return sorted(int(k.rsplit("-", 1)[1]) for k in self.replicas
                      if k.rsplit("-", 1)[0] == server)

    def register_autoscaled_servers(self) -> None:
        """Tell the scheduler the bounds of config servers that autoscale (it scales Servers
        whose spec it knows); their replicas are started here, so this only records them."""
        from runtime.client import SchedulerClient

        scaled = [s for s in self.servers.values() if s.maxReplicas is not None]
        if not scaled or not self.config.autoscaling.servers:
            return
        client = SchedulerClient(self.scheduler_address)
        try:
            for s in scaled:
                spec = s.model_dump(exclude={"name", "fetch"}, exclude_none=True)
                client.apply("Server", s.name, json.dumps(spec))
        finally:
            client.close()

    def _start_dataflow(self) -> None:
        """Broker and dataflow services (pipelines)."""
        from runtime.local.dataflow import start_dataflow

        start_dataflow(self)

    def _start_controller(self) -> None:
        """`core2 up --kube`: the controller serves the cluster's Seldon CRs with this
        platform; relative storageUris are read from kube.storageBase, which the agents may
        fetch from."""
        kube = self.config.kube
        if kube is None:
            return
        base = (kube.storageBase or Path.cwd()).resolve()
        admit_folder(self.run_dir, base)
        args = ["--scheduler", self.scheduler_address, "--kubeconfig", str(kube.kubeconfig),
                "--storage-base", str(base), "--run-dir", str(self.run_dir),
                "--health-port", str(self.ports["controllerHealth"]),
                "--lease-namespace", kube.leaseNamespace,
                "--lease-duration", str(kube.leaseSeconds),
                "--renew-deadline", str(kube.leaseSeconds * 2 / 3),
                "--retry-period", str(max(1.0, kube.leaseSeconds / 6))]
        if kube.context:
            args += ["--context", kube.context]
        for ns in kube.namespaces:
            args += ["--namespace", ns]
        health = f"http://127.0.0.1:{self.ports['controllerHealth']}"
        self._add("controller", python_module("runtime.controller", *args),
                  lambda: http_ok(f"{health}/healthz"), probe=lambda: http_ok(f"{health}/readyz"))

    def wait_healthy(self, progress: Callable[[str], None] = lambda _: None,
                     only: list[str] | None = None, timeout: float = START_TIMEOUT_S) -> None:
        pending = [n for n in (only or self.services)]
        deadline = time.monotonic() + timeout
        shown = None
        while pending:
            for name in list(pending):
                svc = self.services[name]
                if not svc.alive():
                    raise RuntimeError(f"{name} exited ({svc.returncode()}); see "
                                       f"{svc.log_path}:\n{svc.tail()}")
                if self.checks[name]():
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise TimeoutError(f"not healthy after {timeout:.0f}s: {', '.join(pending)} "
                                   f"(logs in {self.logs})")
            if pending and pending != shown:
                progress(f"waiting for {', '.join(pending)}")
                shown = list(pending)
            time.sleep(0.1)

    def wait_servers_connected(self, names: list[str],
                               progress: Callable[[str], None] = lambda _: None,
                               timeout: float = START_TIMEOUT_S) -> None:
        """Until the scheduler has every replica of these servers: an agent is ready before its
        subscription reaches the scheduler, and a model applied in between would be refused
        (no server offers its requirements)."""
        from runtime.client import SchedulerClient

        want = {n: len(self.running_replicas(n)) for n in names}
        deadline = time.monotonic() + timeout
        client, shown = SchedulerClient(self.scheduler_address), None
        try:
            while True:
                seen = {s.name: sum(r["connected"] for r in json.loads(s.detail_json)["replicas"])
                        for s in client.status("Server")}
                missing = [n for n, count in want.items() if seen.get(n, 0) < count]
                if not missing:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the scheduler has not seen every replica of server(s) "
                                       f"{', '.join(missing)} after {timeout:.0f}s (logs in "
                                       f"{self.logs})")
                if missing != shown:
                    progress(f"waiting for the scheduler to see server(s) {', '.join(missing)}")
                    shown = missing
                time.sleep(0.1)
        finally:
            client.close()

    def stop(self) -> None:
        for svc in reversed(list(self.services.values())):
            svc.stop()
        self.services.clear()
        (self.run_dir / STATE_FILE).unlink(missing_ok=True)

    # ---- for tests: crash and restart one service -----------------------------------------
    def kill(self, name: str) -> None:
        self.services[name].kill()

    def restart(self, name: str) -> None:
        svc = self.services[name]
        svc.stop()
        svc.start()
        self.wait_healthy(only=[name])

    # ---- detached mode ---------------------------------------------------------------------
    def save_state(self, extra: dict | None = None) -> None:
        """Write state.json atomically (readers poll it while the supervisor rewrites it)."""
        state = {"ports": self.ports, "kafkaBootstrap": self.kafka_bootstrap,
                 "inference": self.inference_url, "inferenceCa": self.inference_ca,
                 "pids": {n: s.pid for n, s in self.services.items() if s.alive()},
                 "endpoints": self.endpoints(), "replicas": self.replicas, **(extra or {})}
        # what `core2 down` checks a pid against before signalling it (pids are reused)
        state["startTimes"] = start_times([*state["pids"].values(), state.get("supervisor")])
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.run_dir / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2))
        tmp.replace(self.run_dir / STATE_FILE)
