"""A tiny end-to-end RD evaluation: run folder layout, bit accounting from the real packets, BD table."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import needs_av, needs_matplotlib

from edgert.srvc.encoder import EncoderConfig
from edgert.srvc.model import SRConfig

pytestmark = [needs_av, needs_matplotlib]


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
