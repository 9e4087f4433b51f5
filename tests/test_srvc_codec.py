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


# --- streams that start from the generic model the decoder holds (issue 18) ---

@pytest.fixture(scope="module")
def generic_stream(tmp_path_factory):
    import torch

    from edgert.srvc.generic import GenericLibrary
    from edgert.srvc.model import SRVCModel

    torch.manual_seed(11)
    generic = SRVCModel(TINY).eval()  # stands for the pretrained model: any weights the decoder ships
    library = GenericLibrary(tmp_path_factory.mktemp("generics"))
    cfg = EncoderConfig(model=TINY, segment_s=0.3, eta=0.05, crf=24, preset="ultrafast", iterations=2, batch=2,
                        seed=3, value_coding="int4b")
    frames = _clip()
    return frames, cfg, generic, library, encode(frames, FPS, cfg, initial_model=generic, generics=library,
                                                 log=lambda m: None)


def test_generic_stream_sends_no_snapshot_and_decodes_to_the_mirror(generic_stream) -> None:
    import json

    from edgert.srvc.generic import GENERIC_VERSION

    frames, _, _, library, res = generic_stream
    head = json.loads(_records(res.container)[0].payload)
    assert head["generic"] == {"sha256": res.generic_sha256, "version": GENERIC_VERSION, "sent": False}
    assert library.get(res.generic_sha256) is not None  # installed where the decoder looks
    assert len(res.packets) == len(res.segments) == 3
    assert not any(p.full_snapshot for p in res.packets)  # segment 0 too is a sparse delta
    assert [p.base_version for p in res.packets] == [1, 2, 3]
    total = sum(t.numel for t in res.manifest.tensors)
    assert all(s.updated == round(0.05 * total) for s in res.segments)
    assert res.initial_model_bytes == 0 and res.summary()["bpp_without_initial_model"] == res.bits_per_pixel()
    out, report = decode(res.container, log=lambda m: None, generics=library)
    assert out.shape == frames.shape and report.rejected == [] and report.bicubic_frames == 0
    assert report.generic_sha256 == res.generic_sha256
    assert all(report.weights_sha256[s.version] == s.weights_sha256 for s in res.segments)
    sampled, _ = decode(res.container, log=lambda m: None, generics=library, every=4)
    assert np.array_equal(sampled, out[::4])  # sampling frames changes nothing in what is decoded
    from edgert.vision import video

    content = _records(res.container)[2].payload
    assert np.array_equal(video.decode(content, every=4), res.lr_decoded[::4])
    with pytest.raises(ValueError, match="every"):
        video.decode(content, every=0)


def test_missing_generic_model_is_refused_naming_its_hash(generic_stream, tmp_path: Path) -> None:
    from edgert.srvc.decoder import MissingGenericModel
    from edgert.srvc.generic import GenericLibrary

    _, _, _, _, res = generic_stream
    empty = GenericLibrary(tmp_path / "none")
    with pytest.raises(MissingGenericModel, match=res.generic_sha256):
        decode(res.container, log=lambda m: None, generics=empty)
    with pytest.raises(ContainerError, match=res.generic_sha256):  # the CLI's catch-all sees it too
        Decoder(res.container, log=lambda m: None, generics=empty)


def test_missing_generic_model_decodes_bicubically_on_request(generic_stream, tmp_path: Path) -> None:
    import torch
    import torch.nn.functional as F

    from edgert.srvc.generic import GenericLibrary
    from edgert.srvc.model import Geometry
    from edgert.vision import video

    frames, _, _, _, res = generic_stream
    logged: list[str] = []
    out, report = decode(res.container, log=logged.append, generics=GenericLibrary(tmp_path / "none"),
                         allow_bicubic=True)
    assert report.applied == [] and report.bicubic_frames == len(frames) and len(report.warnings) == 1
    assert res.generic_sha256 in logged[0] and "bicubic" in logged[0]
    geo = Geometry(frames.shape[2], frames.shape[1], TINY.scale)
    x = video.frames_to_tensor(res.lr_decoded)
    up = F.interpolate(x, scale_factor=TINY.scale, mode="bicubic", align_corners=False)
    expected = geo.crop_hr(up.clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    assert np.array_equal(out, expected)


def test_snapshot_sent_for_decoders_without_the_generic_model(generic_stream, tmp_path: Path) -> None:
    from edgert.srvc.generic import GenericLibrary

    frames, cfg, generic, library, res = generic_stream
    sent = encode(frames, FPS, replace(cfg, send_generic=True), initial_model=generic, log=lambda m: None)
    assert sent.packets[0].full_snapshot and sent.initial_model_bytes == len(sent.packets[0].data)
    assert sent.model_bytes == res.model_bytes + sent.initial_model_bytes  # counted; the updates are the same
    assert sent.bits_per_pixel() > res.bits_per_pixel()
    with_it, report_a = decode(sent.container, log=lambda m: None, generics=library)  # skips the stream's copy
    without, report_b = decode(sent.container, log=lambda m: None, generics=GenericLibrary(tmp_path / "none"))
    assert np.array_equal(with_it, without) and report_a.rejected == report_b.rejected == []
    assert report_b.weights_sha256 == report_a.weights_sha256


def test_header_naming_a_bad_generic_id_is_a_container_error(generic_stream) -> None:
    import json

    _, _, _, library, res = generic_stream
    recs = _records(res.container)
    for bad in ({"sha256": "../../etc/passwd", "version": 1, "sent": False}, "x",
                {"sha256": res.generic_sha256, "version": 7, "sent": False}):
        head = json.loads(recs[0].payload)
        head["generic"] = bad
        data = write_container(head, recs[1].payload, recs[2].payload,
                               [(r.first_frame, r.time_s, r.payload) for r in recs if r.type == b"MODL"])
        with pytest.raises(ContainerError, match="record #0 \\(HEAD\\): generic"):
            Decoder(data, log=lambda m: None, generics=library)


def test_rd_decision_skips_updates_worth_less_than_their_bits(generic_stream) -> None:
    frames, cfg, generic, library, _ = generic_stream
    res = encode(frames, FPS, replace(cfg, rd_skip=True, rd_frames=2), initial_model=generic, log=lambda m: None)
    assert res.rd_lambda_db_per_bit is not None and res.rd_lambda_db_per_bit >= 0
    for s in res.segments:
        assert s.gain_db is not None and s.cost_db is not None
        assert s.sent == (s.gain_db >= s.cost_db)
    assert len(res.packets) == sum(s.sent for s in res.segments)
    assert [r.first_frame for r in _records(res.container) if r.type == b"MODL"] == \
        [s.first_frame for s in res.segments if s.sent]
    _, report = decode(res.container, log=lambda m: None, generics=library)
    assert all(report.weights_sha256[s.version] == s.weights_sha256 for s in res.segments)
    # 2 frames of 9 at a few kbit of content: a 4-bit update of 5 % of the weights costs more than it gains
    assert not any(s.sent for s in res.segments)
