"""`core2 up | down | status | logs`: the local platform (runtime/local/ runs and supervises
it; these commands start it, ask it, and stop it)."""

import time
from pathlib import Path

import click

from runtime.cli.context import CliError, Options, global_options, options, say
from runtime.cli.output import dump, output_option, table
from runtime.specs import SpecError


def show_endpoints(endpoints: dict[str, str]) -> None:
    table(["ENDPOINT", "ADDRESS"], endpoints.items())


def _config(opts: Options, config: str | None, free_ports: bool, kafka_bootstrap: str | None,
            kafka: str | None, no_pipelines: bool, kube: str | None):
    from runtime.local.config import LocalConfig, LocalKube, Ports

    try:
        cfg = LocalConfig.load(config)
    except SpecError as e:
        raise CliError(str(e), 2) from None
    if free_ports:  # 0: the platform picks a free port for it
        cfg.ports = Ports(**dict.fromkeys(Ports.model_fields, 0))
    if kafka_bootstrap:
        cfg.kafkaBootstrap = kafka_bootstrap
    if kafka:
        cfg.kafkaBroker = kafka  # type: ignore[assignment]  # click.Choice checked it
    if no_pipelines:
        cfg.pipelines = False
    if cfg.pipelines and not cfg.kafkaBootstrap and cfg.kafkaBroker == "apache":
        from runtime.kafka_apache import java_cp

        try:
            java_cp()
        except RuntimeError as e:
            raise CliError(str(e)) from None
    if kube:
        cfg.kube = LocalKube(kubeconfig=Path(kube).resolve(), storageBase=Path.cwd())
    return cfg


@click.command(short_help="Start the platform locally (-d: in the background)")
@click.option("-c", "--config", metavar="FILE", help="local config YAML (ports, servers, kafka, "
              "TLS, ...; README: Local configuration)")
@click.option("-d", "--detach", is_flag=True, help="return once healthy; the supervisor keeps "
              "running in the background")
@click.option("--free-ports", is_flag=True, help="a free port for every service instead of the "
              "fixed ones (9000, 9004, ...); `core2 status` shows them")
@click.option("--kafka-bootstrap", metavar="HOST:PORT",
              help="use this Kafka instead of starting a broker")
@click.option("--kafka", type=click.Choice(("embedded", "apache")),
              help="the broker to start: embedded (Tansu, memory only; the default) or apache "
                   "(Apache Kafka from the jars scripts/tools fetched)")
@click.option("--no-pipelines", is_flag=True, help="no broker or dataflow services")
@click.option("--kube", metavar="KUBECONFIG",
              help="also serve this cluster's Seldon CRs (runs the controller)")
@global_options
def up(config: str | None, detach: bool, free_ports: bool, kafka_bootstrap: str | None,
       kafka: str | None, no_pipelines: bool, kube: str | None) -> None:
    """Start the platform locally: broker, scheduler, Envoy, MLServer with its agent, the
    dataflow services; prints every endpoint. In the foreground it supervises until Ctrl-C;
    with --detach it returns once healthy (`core2 down` stops it).

    \b
    Example: core2 up --detach --free-ports
    """
    from runtime.local.control import running

    opts = options()
    run_dir = opts.home.resolve()
    if running(run_dir):
        raise CliError(f"core2 is already running from {run_dir} (`core2 down` stops it)")
    cfg = _config(opts, config, free_ports, kafka_bootstrap, kafka, no_pipelines, kube)
    started = time.monotonic()
    say(f"starting core2 in {run_dir} (logs in {run_dir / 'logs'})")

    def progress(message: str) -> None:
        say(f"  [{time.monotonic() - started:5.1f}s] {message}")

    def ready(endpoints: dict[str, str]) -> None:
        say(f"core2 is up in {time.monotonic() - started:.1f}s")
        show_endpoints(endpoints)

    try:
        if detach:
            from runtime.local.detach import start_detached

            ready(start_detached(run_dir, cfg, progress)["endpoints"])
            return
        from runtime.local.supervisor import supervise

        def on_up(platform) -> None:
            ready(platform.endpoints())
            say("supervising; press Ctrl-C to stop")

        supervise(run_dir, cfg, progress, on_up=on_up, log=say)
    except (RuntimeError, TimeoutError) as e:
        raise CliError(str(e)) from None


@click.command(short_help="Stop the local platform")
@global_options
def down() -> None:
    """Stop the local platform (found from any sub-folder, or --run-dir / $CORE2_HOME): its
    supervisor and every service it started. A recorded pid that now belongs to another
    program is left alone.

    \b
    Example: core2 down
    """
    from runtime.local.control import stop

    home = options().home
    done = stop(home)
    if done is None:
        say(f"core2 is not running: no platform recorded in {home.resolve()}")
        return
    for pid in done.foreign:
        say(f"left pid {pid} alone: it is no longer a core2 process")
    if done.survivors:
        raise CliError(f"could not stop pid(s) {', '.join(map(str, done.survivors))}; "
                       f"state kept in {home.resolve()}")
    say(f"stopped {len(done.services)} services" if done.services else
        "core2 was not running (its recorded processes had ended); state cleared")


@click.command(short_help="The local services, their state and endpoints")
@output_option("table")
@click.option("--json", "as_json", is_flag=True, help="same as -o json")
@global_options
def status(output: str, as_json: bool) -> None:
    """The local services (state, pid, restarts, last exit) and every endpoint. Exits 1 when
    a service is not Ready or the supervisor is gone.

    \b
    Example: core2 status -o wide
    """
    from runtime.local.status import describe

    opts = options()
    state = opts.state()
    if not state:
        raise CliError(f"core2 is not running: no platform recorded in {opts.home.resolve()}")
    report = describe(state)
    fmt = "json" if as_json else output
    if fmt in ("json", "yaml"):
        dump(report, fmt)
    else:
        _status_table(report, opts.home / "logs", wide=fmt == "wide")
    if not report["supervisor"]["running"]:
        raise CliError("the supervisor is not running: services are not restarted; "
                       "`core2 down` then `core2 up`")
    bad = [n for n, s in report["services"].items() if s["state"] != "Ready"]
    if bad:
        raise CliError(f"not ready: {', '.join(bad)}; see `core2 logs SERVICE` "
                       f"({opts.home / 'logs'})")


def _status_table(report: dict, logs: Path, wide: bool) -> None:
    sup = report["supervisor"]
    say(f"supervisor: {'running' if sup['running'] else 'NOT RUNNING'} (pid {sup['pid']})")
    headers = ["SERVICE", "STATE", "PID", "RESTARTS", "LAST EXIT"] + (["LOG"] if wide else [])
    rows = []
    for name, s in report["services"].items():
        last = s["lastExit"]
        row = [name, s["state"], s["pid"], s["restarts"],
               f"{last['reason']} ({_ago(last.get('at'))})" if last else ""]
        rows.append(row + ([str(logs / f"{name}.log")] if wide else []))
    table(headers, rows)
    click.echo()
    show_endpoints(report["endpoints"])


def _ago(at: float | None) -> str:
    if not at:
        return ""
    seconds = max(0, time.time() - at)
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


@click.command(short_help="Print (-f: follow) a local service's log")
@click.argument("service")
@click.option("-f", "--follow", is_flag=True, help="keep printing what is appended, until Ctrl-C")
@click.option("--tail", type=click.IntRange(min=0), default=None, metavar="N",
              help="only the last N lines")
@global_options
def logs(service: str, follow: bool, tail: int | None) -> None:
    """Print a local service's log (<run dir>/logs/SERVICE.log); -f follows it.

    \b
    Example: core2 logs scheduler -f --tail 20
    """
    folder = options().home / "logs"
    path = folder / f"{service}.log"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.log"))
        raise CliError(f"no service {service!r}" + (f"; services: {', '.join(known)}" if known
                                                    else f": no logs in {folder.resolve()}"), 2)
    with open(path, "rb") as f:
        lines = f.readlines()
        click.echo(b"".join(lines if tail is None else lines[max(0, len(lines) - tail):]), nl=False)
        while follow:
            chunk = f.read()
            if chunk:
                click.echo(chunk, nl=False)
            else:
                time.sleep(0.2)


COMMANDS: list[click.Command] = [up, down, status, logs]
