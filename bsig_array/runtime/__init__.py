"""How stages run: defaults, memory model, task runner, progress protocol, device, stage boundary.

- :mod:`.defaults`: one table of defaults with ``BSIG_*`` environment overrides;
- :mod:`.memory`: ``--memory-limit`` turned into work sizes and concurrency (one model, every stage);
- :mod:`.tasks`: independent tasks on threads, processes or dask.distributed (``--scheduler``);
- :mod:`.progress`: the protocol through which stages report progress (the CLI draws the bars);
- :mod:`.device`: ``--device auto|cpu|gpu``;
- :mod:`.boundary`: a kernel's refusal inside a task becomes a one-line user error.
"""
