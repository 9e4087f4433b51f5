#!/usr/bin/env bash
# Scene-cut uploads with a large zoo: the study's alpha = 0 / gamma = 1 ablation point (every promising model
# joins the zoo: 47-49 experts by the end), with AMS-style and recl_cut added. About 6 minutes on 2 cores.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../../../.."  # the repository root
bash docs/results/recl/classification_scene_cut/run.sh \
  docs/results/recl/classification/points/ablation-alpha_gamma-alpha_0_gamma_1 \
  docs/results/recl/classification_scene_cut_zoo49 ams recl_cut
