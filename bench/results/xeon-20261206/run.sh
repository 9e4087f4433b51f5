#!/usr/bin/env bash
# Issue 17's hot paths re-measured on the Intel Xeon (AVX-512, AMX) 2-vCPU machine, nothing else running.
# About 15 minutes. Writes the JSON and .md tables into this folder.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../.."  # the repository root
export PYTHONPATH=python
py=.venv/bin/python
for threads in 1 2; do
  OMP_NUM_THREADS=$threads $py -m bench.hotpaths --only mmnet_detect --peers compile --threads $threads --out "$here"
  OMP_NUM_THREADS=$threads $py -m bench.hotpaths --only adaptive_conv --peers compile --threads $threads --out "$here"
done
OMP_NUM_THREADS=1 $py -m bench.hotpaths --only packet --threads 1 --out "$here"
OMP_NUM_THREADS=2 $py -m bench.hotpaths --only sparse_patch --only block_average --threads 2 --out "$here"
