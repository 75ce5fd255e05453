"""Kernels exposed as torch.library custom ops, one op per module."""
