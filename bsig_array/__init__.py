"""bsig-array: out-of-core benchmark signatures from perplexity in the wild.

Stages (``synth``, ``screen``, ``selection``, ``overlap``, ...) take and return xarray objects;
pure array kernels live in :mod:`bsig_array.kernels`; the ``bsig`` command line in :mod:`bsig_array.cli`.
"""

from bsig_array.errors import BsigError

__all__ = ["BsigError", "__version__"]
__version__ = "0.1.0"
