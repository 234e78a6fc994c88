"""`core2 server status | list` (servers are started by `core2 up`, or `core2 apply` of a
Server manifest in local mode)."""

import click

from runtime.cli.resources import kind_group

server = kind_group("Server", None, None, """Servers: the inference servers models are placed
on, with their replicas, memory and loaded models.

\b
Example:
  core2 server list -o wide
  core2 server status mlserver
""")

COMMANDS: list[click.Command] = [server]
