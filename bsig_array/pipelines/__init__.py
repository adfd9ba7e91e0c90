"""Chains of stages: the planted synthetic pool (:mod:`.synth`, :mod:`.synth_questions`), the
one-command demo (:mod:`.demo`) and the real zoo pool (:mod:`.zoo_pool`)."""
