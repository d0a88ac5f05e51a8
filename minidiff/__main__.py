"""`python -m minidiff ...`: see `minidiff.cli`."""

import sys

from .cli import main

sys.exit(main())
