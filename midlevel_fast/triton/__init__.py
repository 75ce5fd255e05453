"""Triton kernels (optional extra ``triton``), imported lazily by the code that dispatches to them.

* :mod:`midlevel_fast.triton.crop_resize`: the fused multi-box crop + antialiased resize + normalise, same
  contract as :func:`midlevel_fast.crop_resize`, every box and scale in one launch.
* :mod:`midlevel_fast.triton.aggregate`: power mean and output maps of dense windows in one launch.

They run on CUDA tensors, or on CPU tensors under Triton's interpreter when ``TRITON_INTERPRET=1`` is set before
the kernel modules are first imported (``triton.jit`` reads it then); the tests use that.
"""
