"""Shared names: dimensions, coordinate values and option choices used across artifacts.

One definition per name, imported by the kernels, the readers and writers in :mod:`bsig_array.io`,
the stages and the CLI.  Changing a name here changes it in every artifact; the on-disk contracts
that use these names are described in ``docs/DESIGN.md`` (§3).
"""

from __future__ import annotations

# ----------------------------------------------------------------------------- dimensions
MODEL = "model"
TOKEN = "token"
BENCHMARK = "benchmark"
#: Screening coefficient (values :data:`COEFFICIENTS`).  Deliberately not ``method``: that is a
#: keyword argument of xarray's ``.sel``, so ``ds.sel(method="thrush")`` would not select.
COEFFICIENT = "coefficient"
TAIL = "tail"
RANK = "rank"
CANDIDATE = "candidate"
STEP = "step"

# ----------------------------------------------------------------------------- values
#: Screening coefficients: Thrush (Eq. 1) and Pre-select (Eq. 2), in output order.
COEFFICIENTS = ("thrush", "preselect")
#: Tails of a screen, in output order.
TAILS = ("low", "high")
#: Ranking of tied NLLs for Thrush: midranks, or store order (the paper repo).
TIES = ("average", "first")
#: Signature selection methods.
SELECTION_METHODS = ("aic", "lasso")
#: Regression covariate of selection and signature overlap: ``exp(nll)`` (the paper) or ``nll``.
COVARIATES = ("perplexity", "nll")
#: Population each model is z-scored over in the signature overlap.
POPULATIONS = ("signatures", "pool")
#: Overlap levels, in report order; ``*_controlled`` net of general ability (``--control general``).
#: An overlap file holds only the levels it had inputs for (its ``levels`` attribute lists them).
LEVELS = ("signature", "signature_controlled", "performance", "performance_controlled", "semantic")
#: Signature profile: tokens oriented by their association with the benchmark, or the paper's plain mean.
SIGNATURE_MODES = ("signed", "paper")
#: ``--control``: none (the paper) or general ability (models' mean score rank over the other benchmarks).
CONTROLS = ("none", "general")
#: Benchmark metadata columns (coordinates along ``benchmark``).
METADATA_COLUMNS = ("family", "format", "category", "function")
#: Metadata value of a benchmark the metadata table does not describe.
UNKNOWN = "unknown"
#: Tables written by ``bsig stats``, one CSV per level and table.
STATS_TABLES = ("within_cross", "family_format", "function_matrix", "clique")
#: Devices of ``--device``.
DEVICES = ("auto", "cpu", "gpu")
#: Local schedulers of ``--scheduler`` (anything with ``://`` is a dask.distributed address).
SCHEDULERS = ("threads", "processes", "synchronous")
#: What a perplexity window scores: the piece's last subword (paper) or all of its subwords.
TARGETS = ("last-token", "piece")

#: Fewest models a pool may have: ranking tokens across models needs at least three.
MIN_MODELS = 3
