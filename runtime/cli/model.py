"""`core2 model load | unload | status | list | infer`."""

import click

from runtime.cli.infer import infer_command
from runtime.cli.resources import kind_group

model = kind_group("Model", "load", "unload", """Models: load them from Seldon YAML, watch
their status, send them inference requests.

\b
Example:
  core2 model load -f samples/iris.yaml
  core2 model list -o wide
  core2 model infer iris @samples/iris-request.json
""")
model.add_command(infer_command("models", ""))

COMMANDS: list[click.Command] = [model]
