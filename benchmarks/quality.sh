#!/usr/bin/env bash
# Every generated block of docs/QUALITY.md, in one command (resumable: each script skips the fusions
# its run folders under runs/ already hold, and adopts those other folders hold for the same settings):
#   bash benchmarks/quality.sh [DATA]        (DATA defaults to ../shared/data)
# Each script prints the estimated time of what it has left before it starts (``--estimate-only`` on
# one script stops there): many hours from nothing on a 2-core CPU; after a change of one default,
# the fusions that it changes.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
python3 benchmarks/quality_sweep.py --data "$data" --with-100
python3 benchmarks/quality_all.py --data "$data" --more-steps 50,100
python3 benchmarks/quality_fullres.py --data "$data"
