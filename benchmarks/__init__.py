"""Benchmarks of manifex against scanpy's and the published baselines.

- ``benchmarks.suite``: the regression suite, the benchmarks behind the headline results
  (``python -m benchmarks.suite``; ``--list`` shows them);
- ``benchmarks.summary``: the headline table, computed from the CSVs into
  ``results/summary.md`` and the README (``python -m benchmarks.summary``; ``--check``);
- ``benchmarks.bench_*``: those benchmarks, each runnable alone;
- ``benchmarks.studies``: one-off studies (``python -m benchmarks.studies.<name>``);
- ``benchmarks.harness``: baselines, scoring, reports and figures shared by all of them;
- ``benchmarks/results/``: every report, CSV and figure, included by the documentation.
"""
