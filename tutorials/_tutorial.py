"""What every tutorial shares: where pictures go, and the reduced-size switch CI uses.

Run a chapter as `python tutorials/01_noising.py` (or cell by cell in an editor that understands
`# %%`). Set MINIDIFF_TUTORIAL_SMALL=1 to run every chapter in seconds at tiny sizes, as CI does;
the numbers then say less, the code paths are the same.
"""

import os
from pathlib import Path

SMALL = os.environ.get("MINIDIFF_TUTORIAL_SMALL") == "1"
OUT = Path(os.environ.get("MINIDIFF_TUTORIAL_OUT", Path(__file__).resolve().parent / "out"))
OUT.mkdir(parents=True, exist_ok=True)


def pick(full, small):
    """`full` when a person reads the chapter, `small` under MINIDIFF_TUTORIAL_SMALL=1."""
    return small if SMALL else full
