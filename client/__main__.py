"""`python -m client MODULE[:NAME]`: the worker CLI (see client/cli.py)."""

import sys

from client.cli import main

sys.exit(main())
