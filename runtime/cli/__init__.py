"""core2: run the platform locally and drive it like Seldon's CLI (and kubectl).

\b
  core2 up [--detach] [--free-ports] | down | status | logs SERVICE [-f]
  core2 apply -f FILE | delete -f FILE
  core2 model load -f FILE | unload NAME | status [NAME] | list | infer NAME JSON
  core2 server status [NAME] | list
  core2 pipeline load | unload | status | list | infer | inspect
  core2 experiment start -f FILE | stop NAME | status [NAME] | list
  core2 promote EXPERIMENT --from STACK --to STACK[,STACK]

The global flags (--run-dir, --scheduler, --inference, --timeout) go before or after the verb.
Lists print tables (-o wide adds columns), status prints Seldon's JSON; -o json|yaml|table|wide
chooses, --watch keeps printing on every change.

\b
Exit status:
  0    success
  1    failure (not ready in time, scheduler unreachable, inference failed, ...)
  2    bad input or refused (a spec error, an unknown flag, a model no server fits)
  130  interrupted (Ctrl-C)

\b
Example:
  core2 up --detach && core2 apply -f samples/quickstart.yaml && core2 model list -o wide
"""

import sys

import click

from runtime.cli.context import CliError, global_options, say
from runtime.client import SchedulerError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _InOrder(click.Group):
    """Commands listed in the order they are added (platform, resources, then nouns)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)


@click.group(cls=_InOrder, help=__doc__,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@global_options
def cli() -> None:
    pass


def _register() -> None:
    from runtime.cli import experiment, model, pipeline, platform, promote, resources, server

    for module in (platform, resources, model, server, pipeline, experiment, promote):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (never raises SystemExit)."""
    try:
        result = cli.main(args=argv, prog_name="core2", standalone_mode=False)
    except CliError as e:
        say(f"error: {e}")
        return e.code
    except click.ClickException as e:  # usage errors: click's message, exit 2
        e.show()
        return e.exit_code
    except SchedulerError as e:
        say(f"error: {e}")
        return EXIT_BAD_INPUT if e.invalid else EXIT_FAILED
    except (KeyboardInterrupt, click.Abort):
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `core2 model list | head`
        sys.stderr.close()
        return EXIT_OK
    return result if isinstance(result, int) else EXIT_OK


__all__ = ["CliError", "cli", "main"]
