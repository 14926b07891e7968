"""Measuring pre-training cost: step time, peak memory, forward FLOPs, matmul peak, HOG time
(``measure``), data-pipeline speed (``pipeline_speed``) and the printed report of a run
(``report``).

The comparison of FastMIM with SimMIM and MAE built on it (the methods, their configs, MAE's
stand-in and the paper's target numbers) is ``tools/analysis/benchmark_pretrain.py``;
docs/benchmark.md has the results.
"""
