"""`python -m dagster_airpeer ...` runs the `airpeer` command line."""

import sys

from .cli import main

sys.exit(main())
