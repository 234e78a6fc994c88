"""Where the CLI finds the platform: the run dir, the scheduler address, the inference URL and
its CA; the global flags that say so (accepted before or after the verb); the errors it
prints without a traceback."""

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from runtime.local.state import STATE_FILE, read_state

if TYPE_CHECKING:  # grpc is imported only by the commands that talk to the scheduler
    from runtime.client import SchedulerClient

RUN_DIR_NAME = ".core2"
F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """A user-facing failure: `error: message` on stderr, exit status 1 (2 for bad input)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def say(message: str) -> None:
    """Progress and errors go to stderr; stdout is for what a script reads."""
    print(message, file=sys.stderr, flush=True)


def find_run_dir(start: Path | None = None) -> Path:
    """$CORE2_HOME, else the nearest `.core2` holding a state.json from `start` (the current
    folder) up, else `.core2` in the current folder."""
    if os.environ.get("CORE2_HOME"):
        return Path(os.environ["CORE2_HOME"])
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / RUN_DIR_NAME / STATE_FILE).is_file():
            return folder / RUN_DIR_NAME
    return here / RUN_DIR_NAME


@dataclass
class Options:
    """The global flags; each command's own copy of a flag overrides the group's."""

    run_dir: str | None = None
    scheduler: str | None = None
    inference: str | None = None
    timeout: float = 120.0

    @property
    def home(self) -> Path:
        return Path(self.run_dir) if self.run_dir else find_run_dir()

    def state(self) -> dict:
        return read_state(self.home) or {}

    def scheduler_address(self) -> str:
        if self.scheduler or os.environ.get("CORE2_SCHEDULER"):
            return self.scheduler or os.environ["CORE2_SCHEDULER"]
        return f"127.0.0.1:{self.state().get('ports', {}).get('schedulerApi', 9004)}"

    @property
    def local(self) -> bool:
        """Talking to a local platform of this run dir (not a --scheduler elsewhere)?"""
        return not self.scheduler and bool(self.state())

    def inference_url(self) -> str:
        given = self.inference or os.environ.get("CORE2_INFERENCE")
        if given:
            return given.rstrip("/")
        state = self.state()
        return state.get("inference") or (
            f"http://127.0.0.1:{state.get('ports', {}).get('envoy', 9000)}")

    def inference_ca(self) -> str | None:
        """The CA to verify an https Envoy with: CORE2_INFERENCE_CA, else the local platform's."""
        return os.environ.get("CORE2_INFERENCE_CA") or self.state().get("inferenceCa")

    @contextmanager
    def client(self) -> Iterator["SchedulerClient"]:
        from runtime.client import SchedulerClient

        client = SchedulerClient(self.scheduler_address())
        try:
            yield client
        finally:
            client.close()


def options() -> Options:
    return click.get_current_context().ensure_object(Options)


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    if value is not None and param.name:
        setattr(ctx.ensure_object(Options), param.name, value)


GLOBAL_OPTIONS = [
    click.option("--run-dir", metavar="DIR", expose_value=False, callback=_remember,
                 help=f"local platform folder (default: $CORE2_HOME, else the nearest "
                      f"{RUN_DIR_NAME}/ with a state.json from here up, else ./{RUN_DIR_NAME})"),
    click.option("--scheduler", metavar="HOST:PORT", expose_value=False, callback=_remember,
                 help="scheduler API (default: $CORE2_SCHEDULER, else the run dir's)"),
    click.option("--inference", metavar="URL", expose_value=False, callback=_remember,
                 help="inference URL, e.g. http://127.0.0.1:9000 (default: $CORE2_INFERENCE, "
                      "else the run dir's Envoy)"),
    click.option("--timeout", type=float, metavar="SECONDS", expose_value=False,
                 callback=_remember, help="how long to wait for readiness (default 120)"),
]


def global_options(f: F) -> F:
    """The global flags, on the group and on every command, so they work anywhere."""
    for option in reversed(GLOBAL_OPTIONS):
        f = option(f)
    return f
