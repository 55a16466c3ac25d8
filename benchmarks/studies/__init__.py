"""One-off studies: each answers one question once (``python -m benchmarks.studies.<name>``).

They are not rerun as part of the regression suite (``python -m benchmarks.suite``); their
reports are in ``benchmarks/results/`` beside the suite's.
"""
