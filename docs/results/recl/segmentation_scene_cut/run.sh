#!/usr/bin/env bash
# RECL with scene-cut uploads (scheme recl_cut) on the committed segmentation evaluation (4 cameras, every scheme
# at the whole window's compute): its schemes are read back, recl_cut runs on the same workload, and the eval
# writes responsiveness.md with the times counted from the switch itself. About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
out=docs/results/recl/segmentation_scene_cut/run
rm -rf "$out" && mkdir -p "$out"
cp docs/results/recl/segmentation/{config.json,results.json,run.json} "$out"/
PYTHONPATH=python .venv/bin/python -m edgert recl eval --task segmentation --out "$out" \
  --schemes recl,ams,ekya,odin,oracle,one_time,recl_cut
rm -rf "$out"/*/zoo  # the schemes' zoos: weights, not results
