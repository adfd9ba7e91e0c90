"""The perplexity store ``nll (model, token)``: schema, writer, the one read path, chunking, validation.

Import from the submodules: :mod:`.schema` (names and checks), :mod:`.writer` (create, write
chunks, progress record), :mod:`.reader` (open, read any block checked), :mod:`.chunks` (the store
as units of work), :mod:`.validate` (``bsig validate``).
"""
