#!/usr/bin/env bash
# On the lent GPU machine: build pycuda from the carried sources (../shared/device copied to
# .device/pycuda), install dig2dig, and run the GPU tests (kernels vs NumPy twins, GPU loop vs CPU loop).
#   bash benchmarks/gpu_check.sh [pytest args]
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
cd /tmp && python3 -m pytest -q -p no:cacheprovider -m gpu "$repo/tests" "$@"
