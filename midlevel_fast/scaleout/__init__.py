"""Scaling out: scoring a collection into JSON Lines / Parquet, resumable (``collection``, ``results``), sharded
across the ranks of a ``torchrun`` group (``distributed``), and training the head with DDP (``train_ddp``)."""
