"""The one exception the kernels raise for bad input."""


class KernelInputError(ValueError):
    """A kernel was given arrays or parameters it cannot compute on (shape, range, model count).

    A ``ValueError``, so plain callers can catch it as one; the stages catch this class at their
    boundary and turn it into a one-line user error.
    """
