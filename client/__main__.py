"""`python -m hopper_client MODULE[:NAME]`: the worker CLI (see client/cli.py)."""

import sys

from hopper_client.cli import main

sys.exit(main())
