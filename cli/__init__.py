"""The ``bsig`` command line: thin click commands that parse, call a stage and report."""
