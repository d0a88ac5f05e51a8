"""`python -m minidiff ...`: see `minidiff.cli`."""

import sys

from minidiff.cli import main

sys.exit(main())
