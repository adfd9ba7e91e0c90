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

from bsig_array.errors import BsigError, InputError, OptionError, PlanError

__all__ = ["BsigError", "InputError", "OptionError", "PlanError", "__version__"]
__version__ = "0.1.0"
