#!/usr/bin/env bash
# Every generated block of docs/QUALITY.md, in one command:
#   bash benchmarks/quality.sh [DATA] [OPTIONS]   (DATA defaults to ../shared/data)
# The raw results (one `dig2dig eval` folder per setting, the quality-time plots) go under runs/, which
# git ignores; only the tables are spliced into docs/QUALITY.md between each script's markers.
# Resumable: each script skips the fusions its folders already hold, adopts those other folders hold
# for the same settings, and prints the estimated time of what is left before it starts (many hours
# from nothing on a 2-core CPU). OPTIONS go to every script: --held-only rewrites the tables from what
# runs/ holds without fusing, --estimate-only stops after the estimates.
set -euo pipefail
cd "$(dirname "$0")/.."
data=${1:-../shared/data}
shift || true
python3 benchmarks/quality_sweep.py --data "$data" --with-100 "$@"
python3 benchmarks/quality_all.py --data "$data" --more-steps 50,100 "$@"
python3 benchmarks/quality_fullres.py --data "$data" "$@"
