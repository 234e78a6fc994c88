"""`python -m runtime.cli`: the `core2` command."""

import sys

from runtime.cli import main

sys.exit(main())
