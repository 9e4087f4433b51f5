"""A tiny end-to-end RD evaluation: run folder layout, bit accounting from the real packets, BD table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_av, needs_matplotlib
from edgert.srvc.encoder import EncoderConfig
from edgert.srvc.model import SRConfig

pytestmark = [needs_av, needs_matplotlib]


@pytest.mark.slow
def test_run_eval_writes_run_folder(tmp_path: Path) -> None:
    pytest.importorskip("skvideo")
    from edgert.srvc.evaluate import EvalConfig, run_eval

    tiny = SRConfig(scale=2, features=4, predictor_channels=8, body_channels=(8,), body_kernels=(3,), residual=True)
    cfg = EvalConfig(clip="carphone", duration_s=0.4, full_crfs=(28.0, 36.0), lr_crfs=(24.0, 34.0),
                     full_preset="ultrafast", methods=("x265", "bicubic", "srvc"), ssim_every=2,
                     encoder=EncoderConfig(model=tiny, segment_s=0.2, iterations=1, batch=2, init="scratch",
                                           preset="ultrafast"))
    res = run_eval(cfg, tmp_path, log=lambda m: None)
    for name in ("config.json", "results.json", "summary.md", "plots/rd_psnr.png", "plots/rd_ssim.png",
                 "plots/psnr_gain_cdf.png"):
        assert (tmp_path / name).is_file(), name
    assert not (tmp_path / "results.partial.json").exists()
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["frames"] == res["frames"] == 12 and len(saved["points"]) == 6
    pixels = 12 * 176 * 144
    for p in saved["points"]:
        assert len(p["psnr_per_frame"]) == 12 and 0 < p["ssim"] <= 1
        if p["method"] == "srvc":
            seg_bytes = sum(s["packet_bytes"] for s in p["segments"])
            assert p["model_bytes"] == seg_bytes and p["initial_model_bytes"] == p["segments"][0]["packet_bytes"]
            assert p["bpp"] == pytest.approx(8 * (p["content_bytes"] + p["model_bytes"]) / pixels)
    assert {"srvc vs x265", "bicubic vs x265", "srvc-updates vs bicubic"} <= set(saved["bd"])
    bicubic = {p["crf"]: p for p in saved["points"] if p["method"] == "bicubic"}
    srvc = {p["crf"]: p for p in saved["points"] if p["method"] == "srvc"}
    assert all(srvc[c]["content_bytes"] == bicubic[c]["content_bytes"] for c in srvc)  # same content stream


def test_ablation_bd_with_and_without_the_initial_model() -> None:
    from edgert.srvc import metrics
    from edgert.srvc.evaluate import ablation_bd

    def pts(extra_bpp: float, psnr_gain: float) -> list[dict[str, float]]:
        # content + updates; the same 4 bpp initial model on every curve
        return [{"crf": c, "bpp_without_initial_model": b + extra_bpp, "bpp": b + extra_bpp + 4.0,
                 "psnr": q + psnr_gain}
                for c, b, q in ((22, 0.08, 34.0), (27, 0.05, 32.5), (32, 0.03, 31.0), (37, 0.02, 29.5))]

    runs = {"0.01": pts(0.0, 0.0), "0.05": pts(0.02, 0.3), "0.1": pts(0.05, 0.4)}
    bd = ablation_bd(runs, "0.01")
    assert set(bd["bd_rate_vs_first_percent"]) == {"0.05", "0.1"}  # the reference is not compared with itself
    ref, test = runs["0.01"], runs["0.05"]
    expected = metrics.bd_rate([p["bpp_without_initial_model"] for p in ref], [p["psnr"] for p in ref],
                               [p["bpp_without_initial_model"] for p in test], [p["psnr"] for p in test])
    assert bd["bd_rate_vs_first_percent_without_initial_model"]["0.05"] == pytest.approx(expected)
    # counted with the shared snapshot, the same +0.02 bpp is a much smaller relative change
    assert abs(bd["bd_rate_vs_first_percent"]["0.05"]) < abs(expected)
    assert bd["bd_psnr_vs_first_db"]["0.1"] is not None
    one_crf = {k: v[:1] for k, v in runs.items()}
    assert all(not d for d in ablation_bd(one_crf, "0.01").values())
