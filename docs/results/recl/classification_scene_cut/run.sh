#!/usr/bin/env bash
# RECL with scene-cut uploads (scheme recl_cut) at the classification study's base point (4 cameras, 3
# micro-windows per window): the committed point's schemes are read back and recl_cut runs on the same workload,
# then the responsiveness page is written, with the times counted from the switch itself.
# About 1 minute on 2 cores (the teacher labels every frame again first, ~25 s).
# Usage: run.sh [POINT OUT SCHEME...]: another committed study point, output folder and schemes to add.
set -euo pipefail
cd "$(dirname "$0")/../../../.."  # the repository root
point=${1:-docs/results/recl/classification/points/cameras4-budget30}
out=${2:-docs/results/recl/classification_scene_cut}
shift $(( $# >= 2 ? 2 : $# ))
schemes=("${@:-recl_cut}")
rm -rf "$out/run" && mkdir -p "$out" && cp -r "$point" "$out/run"
PYTHONPATH=python .venv/bin/python - "$out" "${schemes[@]}" <<'PY'
import json, sys
from pathlib import Path
from edgert.recl.evaluate import EvalConfig, format_table, run_eval
from edgert.recl.study import format_responsiveness, plot_responsiveness, point_responsiveness

out, added = Path(sys.argv[1]), sys.argv[2:]
run = out / "run"
stored = json.loads((run / "config.json").read_text())["eval"]
cfg = EvalConfig(**{**stored, "schemes": (*stored["schemes"], *[s for s in added if s not in stored["schemes"]])})
results = run_eval(cfg, run, plots=True)
a = point_responsiveness(results, cfg.workload_config().window_s, cfg.recl_config("recl").mu)
(out / "responsiveness.md").write_text("\n".join(
    [f"# RECL classification: responsiveness with scene-cut uploads ({cfg.cameras} cameras)",
     *format_responsiveness(a)]) + "\n")
plot_responsiveness(a, out / "responsiveness.png", cfg.task)
print(format_table(results))
PY
rm -rf "$out/run"/*/zoo  # the schemes' zoos: weights, not results
