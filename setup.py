"""Builds the torch-free C++ extension. torch is never imported here (see pyproject's build requirements)."""
import os
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

# Portable baseline code plus an AVX2/FMA clone picked at load time, so one wheel runs everywhere and fast.
cflags = ["-O3", "-fopenmp", "-std=c++17", "-fno-math-errno"]
ldflags = ["-fopenmp"]
if os.environ.get("MIDLEVEL_FAST_SANITIZE") == "1":
    cflags += ["-fsanitize=address", "-fno-omit-frame-pointer", "-O1", "-g"]
    ldflags += ["-fsanitize=address"]

ext_modules = [
    Pybind11Extension(
        "midlevel_fast._C",
        ["csrc/bindings.cpp", "csrc/cpu/crop_resize.cpp"],
        include_dirs=["csrc"],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        cxx_std=17,
    )
]

if sys.platform == "darwin":
    raise SystemExit("midlevel_fast: macOS builds are not supported yet (needs an OpenMP toolchain)")

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
