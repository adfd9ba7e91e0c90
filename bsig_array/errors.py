"""User-facing errors.

A :class:`BsigError` is a problem with the user's input or request (a bad store, a mismatched model
list, a plan that cannot fit the memory limit).  The CLI prints its message as one line on stderr and
exits non-zero without a traceback; anything else is a bug and keeps its traceback.
"""


class BsigError(Exception):
    """An input or request problem; the message names the problem and the fix, on one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
