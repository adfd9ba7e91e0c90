"""User-facing errors.

A :class:`BsigError` is a problem with the user's input or request; the CLI prints its message as
one line ``bsig: error: …`` on stderr and exits non-zero without a traceback.  Anything else is a bug
and keeps its traceback.  Raise the most specific subclass:

- :class:`InputError`: an input or output artifact is missing, malformed or inconsistent (a store,
  a score table, a file in the way of an output);
- :class:`OptionError`: an option or setting has a bad value (including ``BSIG_*`` overrides);
- :class:`PlanError`: the request is valid but cannot run within the limits (memory, device).

Every message names the problem and the fix, on one line.
"""


class BsigError(Exception):
    """An input or request problem; the message names the problem and the fix, on one line."""

    exit_code = 2

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


class InputError(BsigError):
    """An input or output artifact (store, table, file) is missing, malformed or inconsistent."""


class OptionError(BsigError):
    """An option, argument or ``BSIG_*`` setting has a value that cannot be used."""


class PlanError(BsigError):
    """A valid request that cannot run within the limits it was given (memory, device)."""


class BsigWarning(UserWarning):
    """Something the user should know that does not stop the run; the CLI prints ``bsig: warning: …``."""
