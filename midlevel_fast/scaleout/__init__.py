"""Scaling out: scoring a collection into JSON Lines / Parquet, resumable (``collection``, ``results``), sharded
across the ranks of a ``torchrun`` group (the plumbing is :mod:`midlevel_fast.runtime.distributed`)."""
