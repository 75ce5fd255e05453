"""The ops, one package per op (``crop_resize``, ``aggregate``): its argument definition (``schema``), one module
per backend, and the dispatcher in its ``__init__``. ``backends`` says which compiled kernels this build has."""
