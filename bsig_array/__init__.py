"""bsig-array: out-of-core benchmark signatures from perplexity in the wild.

The package follows the data flow (docs/DESIGN.md §1–2):

- :mod:`bsig_array.schema`, :mod:`bsig_array.errors`, :mod:`bsig_array.options`: shared names, the
  error hierarchy and the checks of user-given values;
- :mod:`bsig_array.kernels`: pure array kernels (no I/O);
- :mod:`bsig_array.runtime`: defaults, memory model, task runner, progress protocol, device;
- :mod:`bsig_array.io`: one module per on-disk artifact (schema, writer, reader, checks);
- :mod:`bsig_array.models`: language models and their NLL backends;
- :mod:`bsig_array.stages`: corpus → perplexity (or ingest) → screen → select → overlap (+ semantic)
  → stats → report, each taking and returning xarray objects;
- :mod:`bsig_array.pipelines`: chains of stages (synthetic pool, demo, zoo pool);
- :mod:`bsig_array.cli`: the thin ``bsig`` command line.
"""

import importlib.machinery
import importlib.util
import os
import sys

from bsig_array.errors import BsigError, InputError, OptionError, PlanError

__all__ = ["BsigError", "InputError", "OptionError", "PlanError", "__version__"]
__version__ = "0.1.0"


def _step_aside(name: str, init_file: str) -> None:
    """Put the installed top-level package *name* in place of a checkout folder found under that name.

    ``kernels/`` and ``cli/`` install as ``bsig_array.kernels`` and ``bsig_array.cli``.  When a
    checkout's root is on ``sys.path`` (``python -m pytest``, ``python`` started in the root) the
    import system also finds them as top-level ``kernels`` and ``cli``, ahead of installed packages of
    those names (Hugging Face's ``kernels``, which transformers imports).  Their ``__init__`` calls this
    when imported under the bare name: the next package of that name on ``sys.path`` (the root left
    out) takes the folder's place in ``sys.modules``, and without one the import fails as if the folder
    were not there (docs/DESIGN.md §2).

    Parameters
    ----------
    name : str
        The bare module name the folder was imported as.
    init_file : str
        The folder's ``__init__.py``.

    Raises
    ------
    ModuleNotFoundError
        When nothing else of that name is installed.
    """
    root = os.path.realpath(os.path.dirname(os.path.dirname(init_file)))
    search = [p for p in sys.path if os.path.realpath(p or os.curdir) != root]
    spec = importlib.machinery.PathFinder.find_spec(name, search)
    for finder in sys.meta_path:  # packages found by other finders (editable installs)
        if spec is not None:
            break
        if finder is not importlib.machinery.PathFinder and hasattr(finder, "find_spec"):
            spec = finder.find_spec(name, None)
    if spec is None or spec.loader is None or os.path.realpath(spec.origin or "") == os.path.realpath(init_file):
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # the import system returns what sys.modules holds once __init__ ends
    spec.loader.exec_module(module)
