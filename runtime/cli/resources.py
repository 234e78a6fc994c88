"""`core2 apply|delete -f FILE`, and the verbs every resource noun shares (load, unload,
status, list), made for one kind at a time by `kind_group`."""

import time
from collections.abc import Callable

import click

from runtime.cli import columns
from runtime.cli.context import CliError, Options, global_options, options, say
from runtime.cli.output import dump, output_option, table, watch_line, watch_option
from runtime.cli.seldon_status import render
from runtime.client import SchedulerClient
from runtime.kinds import READY, Kind
from runtime.pb import scheduler_pb2 as pb
from runtime.specs import SpecError
from runtime.specs.manifest import Resource, load_file
from runtime.specs.pipeline import PipelineSpec


def load_manifests(path: str, kinds: set[str] | None = None) -> list[Resource]:
    """The resources of a Seldon YAML file, checked as far as the CLI can (exit 2 if not)."""
    try:
        resources = load_file(path)
        for r in resources:
            if isinstance(r.spec, PipelineSpec):  # checks that need the pipeline's name
                r.spec.validate_for(r.name)
    except SpecError as e:
        raise CliError(str(e), 2) from None
    if kinds:
        wrong = [f"{r.kind} {r.name}" for r in resources if r.kind not in kinds]
        if wrong:
            raise CliError(f"{path}: expected {' or '.join(sorted(kinds))}, found "
                           f"{', '.join(wrong)}", 2)
    return resources


def progress(kind: str, name: str) -> Callable[[pb.ResourceStatus], None]:
    """Shows each state a resource passes through while the CLI waits for it (stderr)."""
    started = time.monotonic()

    def show(s: pb.ResourceStatus) -> None:
        reason = f" ({s.reason})" if s.reason else ""
        say(f"  [{time.monotonic() - started:5.1f}s] {kind.lower()} {name}: {s.state}{reason}")
    return show


def apply_all(opts: Options, paths: list[str], resources: list[Resource], wait: bool) -> None:
    """Apply in file order (a local platform first starts an applied Server's replicas), then
    wait until every Model, Pipeline and Experiment is ready."""
    from runtime.local.control import admit_manifest_folders, start_server

    local = opts.local
    if local:
        admit_manifest_folders(opts.home, paths)
    with opts.client() as client:
        for r in resources:
            if r.kind == "Server" and local:
                try:
                    start_server(opts.home, r.name, r.spec.model_dump(exclude_none=True),
                                 opts.timeout, say)
                except RuntimeError as e:  # not running, refused, not ready in time
                    raise CliError(str(e)) from None
            s = client.apply_resource(r)
            say(f"{r.kind.lower()} {r.name}: applied (version {s.version})")
        if wait:
            for r in resources:
                if r.kind != "Server":
                    client.wait(r.kind, r.name, timeout=opts.timeout,
                                progress=progress(r.kind, r.name))


file_option = click.option("-f", "--file", "files", required=True, multiple=True,
                           metavar="FILE", help="Seldon YAML manifest (repeatable)")
no_wait_option = click.option("--no-wait", is_flag=True, help="return once applied")


@click.command(short_help="Create or update the resources in YAML files")
@file_option
@no_wait_option
@global_options
def apply(files: tuple[str, ...], no_wait: bool) -> None:
    """Create or update every resource in Seldon YAML files (any mix of Model, Server,
    Pipeline, Experiment), then wait until each is ready, showing progress.

    \b
    Example: core2 apply -f samples/quickstart.yaml
    """
    resources = [r for path in files for r in load_manifests(path)]
    apply_all(options(), list(files), resources, wait=not no_wait)


@click.command(short_help="Delete the resources named in YAML files")
@file_option
@global_options
def delete(files: tuple[str, ...]) -> None:
    """Delete every resource named in Seldon YAML files (in reverse order).

    \b
    Example: core2 delete -f samples/quickstart.yaml
    """
    resources = [r for path in files for r in load_manifests(path)]
    with options().client() as client:
        for r in reversed(resources):
            client.delete(r.kind, r.name)
            say(f"{r.kind.lower()} {r.name}: deleted")


# ---- the verbs of one kind -----------------------------------------------------------------
def show(kind: str, items: list[pb.ResourceStatus], fmt: str, one: bool) -> None:
    """Statuses as a table, or Seldon's documents (one, or a list) as JSON/YAML."""
    if fmt in ("table", "wide"):
        headers, row = columns.of(kind, wide=fmt == "wide")
        table(headers, (row(s) for s in items))
    else:
        docs = [render(s) for s in items]
        dump(docs[0] if one else docs, fmt)


def watch(client: SchedulerClient, kind: str, name: str, fmt: str) -> None:
    """Print on every change until Ctrl-C: a table row (header once), or a document a line."""
    headers, row = columns.of(kind, wide=fmt == "wide")
    first = True
    for s in client.watch(kind, name):
        if fmt in ("table", "wide"):
            table(headers if first else [""] * len(headers), [row(s)])
            first = False
        else:
            watch_line(render(s), fmt)


def status_command(kind: str, noun: str) -> click.Command:
    @click.command("status")
    @click.argument("name", required=False, default="")
    @click.option("-w", "--wait", "until", is_flag=False, flag_value="ready", default=None,
                  metavar="STATE", help=f"first wait until the {noun} is in STATE (e.g. "
                  f"{READY[Kind(kind)]}; -w alone: until ready), up to --timeout")
    @output_option("json")
    @watch_option
    @global_options
    def status(name: str, until: str | None, output: str, watch_: bool) -> None:
        opts = options()
        with opts.client() as client:
            if until:
                if not name:
                    raise CliError("-w/--wait: needs a NAME", 2)
                client.wait(kind, name, until=until, timeout=opts.timeout)
            if watch_:
                watch(client, kind, name, output)
                return
            show(kind, client.status(kind, name), output, one=bool(name))

    status.help = (f"Seldon's {noun} status: one {noun}, or every {noun} without NAME. JSON by "
                   f"default (the document `seldon {noun} status` prints).\n\n\b\nExample: "
                   f"core2 {noun} status NAME -w {READY[Kind(kind)]} -o yaml")
    return status


def list_command(kind: str, noun: str) -> click.Command:
    @click.command("list")
    @output_option("table")
    @watch_option
    @global_options
    def list_(output: str, watch_: bool) -> None:
        with options().client() as client:
            if watch_:
                watch(client, kind, "", output)
            else:
                show(kind, client.status(kind), output, one=False)

    list_.help = (f"Every {noun} with its state, as a table (-o wide: more columns).\n\n\b\n"
                  f"Example: core2 {noun} list -o wide --watch")
    return list_


def load_command(kind: str, noun: str, verb: str) -> click.Command:
    @click.command(verb)
    @click.option("-f", "--file", "file", required=True, metavar="FILE",
                  help=f"Seldon YAML with {noun}s")
    @no_wait_option
    @global_options
    def load(file: str, no_wait: bool) -> None:
        resources = load_manifests(file, {kind})
        apply_all(options(), [file], resources, wait=not no_wait)

    load.help = (f"{verb.capitalize()} the {noun}s of a Seldon YAML file and wait until each "
                 f"is ready ({READY[Kind(kind)]}), showing progress.\n\n\b\n"
                 f"Example: core2 {noun} {verb} -f FILE")
    return load


def unload_command(kind: str, noun: str, verb: str) -> click.Command:
    @click.command(verb)
    @click.argument("name")
    @no_wait_option
    @global_options
    def unload(name: str, no_wait: bool) -> None:
        opts = options()
        with opts.client() as client:
            client.delete(kind, name)
            if not no_wait:
                client.wait(kind, name, until="gone", timeout=opts.timeout,
                            progress=progress(kind, name))
        say(f"{noun} {name}: {verb}{'ped' if verb == 'stop' else 'ed'}")

    unload.help = (f"{verb.capitalize()} a {noun} and wait until it is gone.\n\n\b\n"
                   f"Example: core2 {noun} {verb} NAME")
    return unload


class KindGroup(click.Group):
    """`core2 --help` lists a kind's verbs, those added after it was made included (infer)."""

    def get_short_help_str(self, limit: int = 45) -> str:
        return f"{(self.name or '').capitalize()}s: {', '.join(self.commands)}"


def kind_group(kind: str, load_verb: str | None, unload_verb: str | None,
               help_text: str) -> click.Group:
    """`core2 <noun>` with load/unload (under their Seldon verbs), status and list."""
    noun = kind.lower()

    @click.group(noun, cls=KindGroup, help=help_text)
    @global_options
    def group() -> None:
        pass

    if load_verb:
        group.add_command(load_command(kind, noun, load_verb))
    if unload_verb:
        group.add_command(unload_command(kind, noun, unload_verb))
    group.add_command(status_command(kind, noun))
    group.add_command(list_command(kind, noun))
    return group


COMMANDS = [apply, delete]
