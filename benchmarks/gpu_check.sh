#!/usr/bin/env bash
# On the lent GPU machine: build pycuda from the carried sources (../shared/device copied to
# .device/pycuda), install dig2dig, run the GPU tests (kernels vs NumPy twins, GPU loop vs CPU loop),
# then the GPU benchmark (benchmarks/gpu_bench.py: tables on stdout, gpu_bench.json in $OUT).
#   bash benchmarks/gpu_check.sh [pytest args]
# NO_BENCH=1 skips the benchmark; BENCH_ARGS passes options to it (e.g. BENCH_ARGS="--no-cpu --rounds 10").
set -euo pipefail
export PYTHONUNBUFFERED=1
site=${SITE:-/tmp/site}
mkdir -p "$site" /tmp/wheels
if ! PYTHONPATH=$site python3 -c "import pycuda" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target "$site" .device/pycuda/*.whl
  python3 -m pip wheel -q --no-build-isolation --no-deps --no-index -w /tmp/wheels .device/pycuda/pycuda-*.tar.gz
  python3 -m pip install -q --no-index --no-deps --target "$site" /tmp/wheels/pycuda-*.whl
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index --upgrade --target "$site" .
export PYTHONPATH=$site
repo=$PWD
status=0
(cd /tmp && python3 -m pytest -q -s -p no:cacheprovider -m gpu "$repo/tests" "$@") || status=$?
if [ "${NO_BENCH:-0}" != 1 ]; then
  # shellcheck disable=SC2086
  (cd /tmp && python3 "$repo/benchmarks/gpu_bench.py" --out "${OUT:-/tmp/gpu_bench}" ${BENCH_ARGS:-}) || status=$?
fi
exit $status
