"""SRVC encoder -> container -> decoder on a tiny generated clip: the decoder's slot holds exactly the
encoder's mirror after every packet; bad packets are rejected and the previous model kept; truncated or
corrupt containers and content streams fail with errors that say where."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_av

pytestmark = needs_av

from edgert.srvc.container import RECORD_HEADER_BYTES, ContainerError, iter_records, write_container  # noqa: E402
from edgert.srvc.decoder import ContentError, Decoder, decode, decode_file  # noqa: E402
from edgert.srvc.encoder import EncoderConfig, encode  # noqa: E402
from edgert.srvc.model import SRConfig  # noqa: E402

TINY = SRConfig(scale=2, features=4, predictor_channels=8, body_channels=(8,), body_kernels=(3,))
FPS = 10.0


def _clip(n: int = 9, h: int = 97, w: int = 101) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    frames = [np.stack([128 + 100 * np.sin((xx + 3 * t) / 5.0), 128 + 100 * np.cos((yy + 2 * t) / 4.0),
                        (xx * 3 + yy * 2 + t * 5) % 256], -1) for t in range(n)]
    return np.clip(frames, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def encoded():
    cfg = EncoderConfig(model=TINY, segment_s=0.3, eta=0.05, crf=24, preset="ultrafast", iterations=2, batch=2,
                        init="scratch", seed=3)
    frames = _clip()
    return frames, encode(frames, FPS, cfg, log=lambda m: None)


def _records(data: bytes):
    return list(iter_records(data))


def _rebuild(data: bytes, edit) -> bytes:
    """Re-serialises a container after ``edit(records)`` changed payloads (record CRCs recomputed)."""
    import json

    recs = _records(data)
    edit(recs)
    head = json.loads(recs[0].payload)
    models = [(r.first_frame, r.time_s, r.payload) for r in recs if r.type == b"MODL"]
    return write_container(head, recs[1].payload, recs[2].payload, models)


def test_round_trip_decoder_weights_equal_encoder_mirror(encoded) -> None:
    frames, res = encoded
    assert [s.first_frame for s in res.segments] == [0, 3, 6]
    assert res.packets[0].full_snapshot and not res.packets[1].full_snapshot
    out, report = decode(res.container, log=lambda m: None)
    assert out.shape == frames.shape and out.dtype == np.uint8  # odd 101x97 padded to 104x100, cropped back
    assert report.rejected == [] and report.bicubic_frames == 0
    assert [a["first_frame"] for a in report.applied] == [0, 3, 6]
    assert [report.weights_sha256[v] for v in (1, 2, 3)] == [s.weights_sha256 for s in res.segments]
    # sparse updates: each touches ~eta of the parameters
    total = sum(t.numel for t in res.manifest.tensors)
    assert res.segments[1].updated == round(0.05 * total)
    assert res.summary()["model_bytes"] == sum(len(p.data) for p in res.packets)


@pytest.mark.parametrize("coding", ["int4b", "int8b"])
def test_lossy_block_values_decoder_equals_mirror_after_every_segment(coding: str) -> None:
    """With lossy values the next segment trains from what the decoder holds, so they never drift apart."""
    cfg = EncoderConfig(model=TINY, segment_s=0.2, eta=0.05, crf=24, preset="ultrafast", iterations=2, batch=2,
                        init="scratch", seed=3, value_coding=coding)
    res = encode(_clip(), FPS, cfg, log=lambda m: None)
    fp16 = encode(_clip(), FPS, replace(cfg, value_coding="fp16"), log=lambda m: None)
    _, report = decode(res.container, log=lambda m: None)
    assert report.rejected == [] and len(res.segments) == 5
    assert [report.weights_sha256[v] for v in sorted(report.weights_sha256)] == [s.weights_sha256 for s in res.segments]
    assert all(len(a.data) < len(b.data) for a, b in zip(res.packets[1:], fp16.packets[1:]))  # the values are coded
    assert [s.weights_sha256 for s in res.segments][1:] != [s.weights_sha256 for s in fp16.segments][1:]


def test_bad_packet_rejected_previous_model_kept(encoded) -> None:
    _, res = encoded

    def flip_value(recs):  # a flipped value byte inside packet #1 (the container CRC is resealed)
        p = bytearray(recs[4].payload)
        p[-10] ^= 0x40
        recs[4].payload = bytes(p)

    messages: list[str] = []
    out, report = decode(_rebuild(res.container, flip_value), log=messages.append)
    assert len(report.rejected) == 2 and messages == report.rejected
    assert "model packet #1" in report.rejected[0] and "BAD_CRC" in report.rejected[0]
    assert "continuing with model version 1" in report.rejected[0]
    assert "VERSION_MISMATCH" in report.rejected[1]  # packet #2 builds on the rejected version 2
    assert list(report.weights_sha256) == [1]
    assert report.weights_sha256[1] == res.segments[0].weights_sha256
    assert out.shape[0] == res.frames


def test_container_crc_mismatch_on_model_record_is_a_rejected_packet(encoded) -> None:
    _, res = encoded
    recs = _records(res.container)
    data = bytearray(res.container)
    data[recs[5].offset + RECORD_HEADER_BYTES + 3] ^= 1  # inside the last model packet, CRC not resealed
    _, report = decode(bytes(data), log=lambda m: None)
    assert len(report.rejected) == 1 and "container CRC32C mismatch" in report.rejected[0]
    assert sorted(report.weights_sha256) == [1, 2]


def test_first_snapshot_rejected_means_bicubic_until_a_model_arrives(encoded) -> None:
    _, res = encoded

    def break_snapshot(recs):
        recs[3].payload = b"XXXX" + recs[3].payload[4:]

    _, report = decode(_rebuild(res.container, break_snapshot), log=lambda m: None)
    assert "BAD_MAGIC" in report.rejected[0] and "none yet: bicubic" in report.rejected[0]
    assert report.bicubic_frames == res.frames and not report.applied


def test_every_truncation_point_is_reported(encoded) -> None:
    _, res = encoded
    data = res.container
    recs = _records(data)
    cuts = sorted({0, 10, 16, 20, recs[2].offset + 40, recs[3].offset + 100, len(data) - 1}
                  | {r.offset for r in recs[1:]})
    for cut in cuts:
        with pytest.raises(ContainerError, match="truncated") as info:
            Decoder(data[:cut])
        assert "record" in str(info.value) or "file header" in str(info.value)
    with pytest.raises(ContainerError, match=r"record #3 \(MODL\) at byte \d+ announces \d+ payload bytes"):
        Decoder(data[:recs[3].offset + 100])


def test_corrupt_container_and_content_errors_say_where(encoded, tmp_path: Path) -> None:
    _, res = encoded
    recs = _records(res.container)
    data = bytearray(res.container)
    data[recs[2].offset + RECORD_HEADER_BYTES + 50] ^= 1
    with pytest.raises(ContainerError, match=r"record #2 \(CONT\) at byte \d+: payload .* fails its CRC32C"):
        Decoder(bytes(data))
    data = bytearray(res.container)
    data[recs[3].offset + 8] ^= 1  # a model record's length field: its header CRC catches it
    with pytest.raises(ContainerError, match=f"record #3 header at byte {recs[3].offset} fails its CRC32C"):
        Decoder(bytes(data))
    with pytest.raises(ContainerError, match="not an SRVC container"):
        Decoder(b"RIFF" + bytes(res.container[4:]))

    def truncate_content(recs):  # a well-framed container whose H.265 stream lost its tail
        recs[2].payload = recs[2].payload[:len(recs[2].payload) // 2]

    bad = _rebuild(res.container, truncate_content)
    with pytest.raises(ContentError,
                       match=r"content stream \(record #2 \(CONT\) at byte \d+, \d+ bytes\): "
                             r"cannot decode after 0 of 9"):
        decode(bad, log=lambda m: None)
    src = tmp_path / "bad.srvc"
    src.write_bytes(bad)
    from edgert.cli import main

    assert main(["srvc", "decode", str(src), "-o", str(tmp_path / "out.mkv")]) == 1


def test_decode_file_writes_lossless_video(encoded, tmp_path: Path) -> None:
    from edgert.vision import video

    _, res = encoded
    src = tmp_path / "clip.srvc"
    src.write_bytes(res.container)
    report = decode_file(src, tmp_path / "out.mkv", log=lambda m: None)
    frames, _ = video.read_clip(tmp_path / "out.mkv")
    expected, _ = decode(res.container, log=lambda m: None)
    np.testing.assert_array_equal(frames, expected)  # FFV1 RGB: bit-exact
    assert report.frames == res.frames and report.sr_fps > 0


def test_encoder_rejects_bad_input() -> None:
    cfg = EncoderConfig(model=TINY, init="scratch", iterations=0)
    with pytest.raises(ValueError, match="uint8"):
        encode(np.zeros((2, 100, 100, 3), np.float32), FPS, cfg)
    with pytest.raises(ValueError, match="at least 48 pixels"):
        encode(np.zeros((2, 60, 60, 3), np.uint8), FPS, cfg)
    with pytest.raises(ValueError, match="eta"):
        encode(_clip(2), FPS, EncoderConfig(model=TINY, init="scratch", eta=0.0))
    with pytest.raises(ValueError, match="initial_model"):
        encode(_clip(2), FPS, EncoderConfig(model=TINY))
