"""On-disk artifacts, one module each: its schema, writer, reader and the checks on reading it.

==========================  ===================================================================
module                      artifact
==========================  ===================================================================
:mod:`.corpus_store`        ``corpus.zarr``: documents and sampled features
:mod:`.perplexity_store`    ``perplexity.zarr``: ``nll (model, token)`` (schema, writer, the one
                            read path, chunking, validation)
:mod:`.scores`              performance matrix ``score (model, benchmark)`` (CSV/Parquet/NetCDF/Zarr)
:mod:`.benchmark_metadata`  benchmark metadata table (family, format, category, function)
:mod:`.lm_eval_results`     lm-eval ``results_*.json`` files (read only)
:mod:`.screen_output`       ``screen.zarr``: tails, thresholds, histograms, candidate NLL columns
:mod:`.signatures`          ``signatures.zarr``: selected tokens, AIC path, fits
:mod:`.overlap_file`        ``overlap.nc|zarr``: overlap matrices
:mod:`.stats_tables`        ``stats/<level>_<table>.csv``
:mod:`.questions`           ``questions/<benchmark>.jsonl``
==========================  ===================================================================

Shared by all of them: :mod:`.kinds` (the registry of artifact kinds: each module above that owns
a directory artifact registers its kind, name and marker entries), :mod:`.atomic` (never clobber by
accident; write to a temporary sibling and rename; debris) and :mod:`.zarr_format` (Zarr v3,
consolidated metadata, text as variable-length strings).  :mod:`.faults` is a test hook only (the
points where tests kill a writer).
"""
