"""NLL backends: one module per inference engine behind the small :class:`.base.Backend` interface,
chosen by name (``transformers``, ``vllm``)."""
