"""Experiments on real VOC data, run as modules (``python -m experiments.voc_ablation``, ``python -m
experiments.dense_agreement``); their numbers are the tables in docs/. Not tests and not benchmarks."""
