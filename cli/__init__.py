"""The ``bsig`` command line: thin click commands that parse, call a stage and report."""

if __name__ != "bsig_array.cli":  # found as a top-level `cli` from a checkout's root: not ours
    from bsig_array import _step_aside

    _step_aside(__name__, __file__)
