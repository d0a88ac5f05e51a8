"""The one exception a user of minidiff should ever see.

`MinidiffError` carries a single line that names the problem and what to do about it. The CLI
prints it and exits with code 2; library callers can catch it (it is a `ValueError`, so code that
already catches bad values keeps working).
"""


class MinidiffError(ValueError):
    """Bad input: the message is one line naming the problem and the fix."""
