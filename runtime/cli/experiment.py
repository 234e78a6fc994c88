"""`core2 experiment start | stop | status | list`."""

import click

from runtime.cli.resources import kind_group

experiment = kind_group("Experiment", "start", "stop", """Experiments: split (or mirror)
traffic between candidate models or pipelines; adaptive ones learn the weights from feedback.

\b
Example:
  core2 experiment start -f samples/experiment.yaml
  core2 experiment status iris-ab -o yaml
""")

COMMANDS: list[click.Command] = [experiment]
