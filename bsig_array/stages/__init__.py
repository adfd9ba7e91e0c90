"""The pipeline's stages, in flow order; each takes and returns xarray objects (or writes one artifact).

1. :mod:`.corpus`: documents → ``corpus.zarr`` (whitespace pieces, sampled features);
2. :mod:`.perplexity`: one model's NLL of every feature → its row of ``perplexity.zarr``
   (or :mod:`.ingest`: NLLs computed elsewhere → ``perplexity.zarr``);
   :mod:`.evaluate`: lm-eval scores of a model → the performance matrix;
3. :mod:`.screen`: Thrush / Pre-select with exact tails → ``screen.zarr``;
4. :mod:`.select`: AIC forward selection (or Lasso) → ``signatures.zarr``;
5. :mod:`.overlap` (with :mod:`.semantic`): signature, performance and semantic overlap → ``overlap.nc``;
6. :mod:`.stats`: within/cross-category, family/format, function matrix, maximum clique;
7. :mod:`.report`: figures and one HTML page.

Formats live in :mod:`bsig_array.io`, how stages run in :mod:`bsig_array.runtime`.
"""
