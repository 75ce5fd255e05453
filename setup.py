"""Builds the torch-free C++ extension, and the CUDA one when nvcc is found. torch is never imported here (see
pyproject's build requirements).

CUDA switch, environment variable ``MIDLEVEL_FAST_CUDA``: ``0`` skips the CUDA extension; ``1`` requires it (a
missing nvcc or a failed compile stops the install); unset means auto: built when nvcc is found, and a failed
CUDA compile only warns, so the CPU package still installs. ``MIDLEVEL_FAST_CUDA_ARCHS`` (e.g. ``"80;90"``)
overrides the GPU architectures; the newest one is also embedded as PTX for GPUs newer than the list.
"""
import os
import re
import shutil
import subprocess
import sys

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

# Portable baseline code plus an AVX2/FMA clone picked at load time, so one wheel runs everywhere and fast.
# No FMA contraction: every clone and optimisation level then rounds alike, so float16 output is exactly the
# float32 output rounded (it costs nothing measurable: the kernel is load/store bound).
cflags = ["-O3", "-fopenmp", "-std=c++17", "-fno-math-errno", "-ffp-contract=off"]
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

# Ampere and Hopper machine code (sm_80 also runs on sm_86/89) plus Hopper PTX that newer GPUs JIT-compile:
# a few seconds of nvcc instead of minutes for every architecture.
DEFAULT_CUDA_ARCHS = "80;90"


def find_nvcc() -> str | None:
    """nvcc from $CUDA_HOME / $CUDA_PATH, else the PATH, else /usr/local/cuda."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        home = os.environ.get(var)
        if home and os.path.isfile(os.path.join(home, "bin", "nvcc")):
            return os.path.join(home, "bin", "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = "/usr/local/cuda/bin/nvcc"
    return default if os.path.isfile(default) else None


def cudart_static_dir(nvcc: str) -> str:
    """The folder holding libcudart_static.a, as nvcc itself links it (nvcc may be a wrapper script, so its own
    location says nothing)."""
    # A dry run prints nvcc's variables (TOP, LIBRARIES) without reading or writing any file.
    dry = subprocess.run([nvcc, "--dryrun", "-c", "probe.cu", "-o", os.devnull], capture_output=True, text=True,
                         check=False)
    dirs = re.findall(r'-L"?([^"\s]+)"?', "\n".join(line for line in (dry.stdout + dry.stderr).splitlines()
                                                   if "LIBRARIES=" in line))
    top = re.search(r"^#\$ TOP=(.+)$", dry.stdout + dry.stderr, re.MULTILINE)
    if top:
        dirs += [os.path.join(top.group(1).strip(), d) for d in ("lib64", "lib")]
    for d in dirs:
        if os.path.isfile(os.path.join(d, "libcudart_static.a")):
            return os.path.normpath(d)
    raise RuntimeError(f"libcudart_static.a not found next to {nvcc} (looked in {dirs})")


def gencode_flags(archs: str) -> tuple[list[str], str]:
    """nvcc -gencode flags for ``"80;90"``-style lists, and the targets as ``"sm_80+sm_90+compute_90"``
    (not commas: nvcc splits -D values at commas)."""
    nums = [a.strip() for a in re.split(r"[;,\s]+", archs) if a.strip()]
    if not nums or not all(a.isdigit() for a in nums):
        raise SystemExit(f"MIDLEVEL_FAST_CUDA_ARCHS must look like '80;90', got {archs!r}")
    flags = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in nums]
    flags.append(f"-gencode=arch=compute_{nums[-1]},code=compute_{nums[-1]}")
    return flags, "+".join([f"sm_{a}" for a in nums] + [f"compute_{nums[-1]}"])


class BuildExt(build_ext):
    """pybind11's build_ext, plus: ``.cu`` sources are compiled by nvcc into objects that are linked into the
    extension with the host linker (setuptools does not know ``.cu``)."""

    nvcc: str | None = None
    nvcc_flags: list[str] = []

    def build_extension(self, ext):
        cu = [s for s in ext.sources if s.endswith(".cu")]
        if cu:
            ext.sources = [s for s in ext.sources if not s.endswith(".cu")]
            os.makedirs(self.build_temp, exist_ok=True)
            for src in cu:
                obj = os.path.join(self.build_temp, os.path.basename(src) + ".o")
                self.spawn([self.nvcc, "-c", src, "-o", obj, *self.nvcc_flags])
                ext.extra_objects = [*(ext.extra_objects or []), obj]
        super().build_extension(ext)


def cuda_extension() -> Pybind11Extension | None:
    mode = os.environ.get("MIDLEVEL_FAST_CUDA", "").strip()
    if mode not in ("", "0", "1"):
        raise SystemExit(f"MIDLEVEL_FAST_CUDA must be 0, 1 or unset, got {mode!r}")
    if mode == "0":
        return None
    nvcc = find_nvcc()
    if nvcc is None:
        if mode == "1":
            raise SystemExit("MIDLEVEL_FAST_CUDA=1 but nvcc was not found (set CUDA_HOME or put nvcc on PATH)")
        print("midlevel_fast: nvcc not found, building without the CUDA extension", file=sys.stderr)
        return None
    try:
        libdir = cudart_static_dir(nvcc)
    except RuntimeError as e:
        if mode == "1":
            raise SystemExit(f"MIDLEVEL_FAST_CUDA=1: {e}") from None
        print(f"midlevel_fast: {e}; building without the CUDA extension", file=sys.stderr)
        return None
    gencode, targets = gencode_flags(os.environ.get("MIDLEVEL_FAST_CUDA_ARCHS", DEFAULT_CUDA_ARCHS))
    BuildExt.nvcc = nvcc
    BuildExt.nvcc_flags = ["-O3", "-std=c++17", "-Icsrc", "-Xcompiler", "-fPIC", *gencode,
                           f"-DMIDLEVEL_FAST_CUDA_TARGETS={targets}"]
    return Pybind11Extension(
        "midlevel_fast._cuda",
        ["csrc/cuda/bindings_cuda.cpp", "csrc/cuda/crop_resize.cu"],
        include_dirs=["csrc"],
        extra_compile_args=["-O2", "-std=c++17"],
        # cudart linked statically: the module then needs only the NVIDIA driver at run time, whatever CUDA
        # runtime (if any) torch ships.
        extra_link_args=[f"-L{libdir}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"],
        cxx_std=17,
        # Auto mode: a failed CUDA compile leaves the CPU package installable.
        optional=mode != "1",
    )


cuda_ext = cuda_extension()
if cuda_ext is not None:
    ext_modules.append(cuda_ext)

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildExt})
