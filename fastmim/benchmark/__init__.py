"""Pre-training speed and memory benchmark: FastMIM against SimMIM and MAE on one backbone.

``tools/analysis/benchmark_pretrain.py`` is the command line; docs/benchmark.md the results.
"""
