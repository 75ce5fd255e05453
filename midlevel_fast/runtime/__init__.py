"""How the process runs: the trunk's precision (``precision``), glibc allocator tuning (``malloc``),
progress bars (``progress``), and the torch.distributed plumbing (``distributed``, ``train_ddp``)."""
