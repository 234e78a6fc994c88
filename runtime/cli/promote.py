"""`core2 promote`: the command line of components.promote (which rewrites Pulumi stacks and
is imported only when the command runs)."""

import json
import sys
from pathlib import Path

import click

from runtime.cli.context import CliError, global_options, options
from runtime.scheduler.bandit import MIN_REWARDS


@click.command(short_help="Make an experiment's winner the default in stacks")
@click.argument("experiment")
@click.option("--from", "source", required=True, metavar="STACK",
              help="stack where the experiment ran")
@click.option("--to", "targets", required=True, metavar="STACK[,STACK]",
              help="stacks to rewrite")
@click.option("--winner", help="candidate to promote (default: the only challenger); auto: "
                               "the one an adaptive experiment's strategy favours")
@click.option("--min-rewards", type=click.IntRange(min=0), default=MIN_REWARDS, metavar="N",
              show_default=True, help="--winner auto: rewards every candidate needs first")
@click.option("--dry-run", is_flag=True, help="print the diff, write nothing")
@click.option("--stacks-dir", default="stacks", show_default=True, metavar="DIR",
              help="directory of Pulumi.<stack>.yaml")
@global_options
def promote(experiment: str, source: str, targets: str, winner: str | None, min_rewards: int,
            dry_run: bool, stacks_dir: str) -> None:
    """Make an experiment's winner the default model in other stacks' Pulumi config, printed
    as a reviewable diff (components/promote.py says what changes).

    \b
    Example: core2 promote iris-ab --from staging --to prod-aws,prod-gcp --dry-run
    """
    from components.promote import PromoteError, auto_winner
    from components.promote import promote as rewrite_stacks
    from runtime.specs import SpecError

    wanted = [t.strip() for t in targets.split(",") if t.strip()]
    try:
        if winner == "auto":
            with options().client() as client:
                [status] = client.status("Experiment", experiment)
            winner = auto_winner(json.loads(status.detail_json or "{}"), experiment,
                                 min_rewards)
            print(f"# --winner auto: {winner}", file=sys.stderr)
        rewrite_stacks(experiment, source, wanted, Path(stacks_dir), winner, dry_run)
    except (PromoteError, SpecError) as e:
        raise CliError(str(e), 2) from None


COMMANDS: list[click.Command] = [promote]
