"""edgert.adapt.audio: the sample-rate pipeline (Silero VAD on real speech from Debian packages) under OneAdapt."""
from __future__ import annotations

import importlib.util
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import needs_av
from edgert.adapt import audio

needs_silero = pytest.mark.skipif(importlib.util.find_spec("silero_vad") is None,
                                  reason="silero-vad not installed (pip install silero-vad==6.2.3; extra [audio])")
needs_speech = pytest.mark.skipif(not {"librivox-0870", "alsa-front-center"} <= set(audio.speech_clips()),
                                  reason="real speech not installed (apt-get install pocketsphinx-testdata "
                                         "alsa-utils)")
pytestmark = [needs_av]


@pytest.fixture(scope="module")
def pipeline():
    """13.5 s: a LibriVox reading (16 kHz) and a 48 kHz voice prompt, each followed by 2.5 s of silence."""
    if importlib.util.find_spec("silero_vad") is None:
        pytest.skip("silero-vad not installed (extra [audio])")
    if not {"librivox-0870", "alsa-front-center"} <= set(audio.speech_clips()):
        pytest.skip("real speech not installed (apt-get install pocketsphinx-testdata alsa-utils)")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    speech = audio.speech_input(["librivox-0870", "alsa-front-center"], gaps=(2.5,))
    yield audio.AudioPipeline(speech.audio)
    torch.set_num_threads(threads)


@needs_speech
def test_clips_load_at_16k():
    clips = audio.speech_clips()
    assert "alsa-noise" not in clips and "alsa-noise" in audio.speech_clips(include_noise=True)
    prompt = audio.load_speech("alsa-front-center")  # 48 kHz file
    with wave.open(str(clips["alsa-front-center"])) as w:
        assert w.getframerate() == 48000
        assert prompt.size == round(w.getnframes() / 3)
    assert prompt.dtype == np.float32 and 0.05 < np.abs(prompt).max() <= 1.0
    raw = audio.load_speech("goforward")  # headerless 16 kHz PCM
    assert raw.size == clips["goforward"].stat().st_size // 2


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


@pytest.mark.parametrize("kind", ["empty_wav", "empty_raw", "garbage", "odd_raw"])
def test_bad_audio_fails_naming_file_and_problem(tmp_path, kind):
    if kind == "empty_wav":
        path, problem = _write_wav(tmp_path / "empty.wav", np.zeros(0, np.int16)), "no samples"
    elif kind == "empty_raw":
        path, problem = tmp_path / "empty.raw", "no samples"
        path.write_bytes(b"")
    elif kind == "garbage":
        path, problem = tmp_path / "garbage.wav", "cannot be decoded"
        path.write_bytes(b"RIFF\x00\x01not a wave file at all" * 20)
    else:
        path, problem = tmp_path / "odd.raw", "odd number of bytes"
        path.write_bytes(b"\x00\x01\x02")
    with pytest.raises(ValueError, match=problem) as err:
        audio.load_speech(path)
    assert path.name in str(err.value)


def test_bad_pipeline_input_fails_before_anything_runs():
    for bad, problem in ((np.zeros(0, np.float32), "with samples"), (np.zeros(100, np.float32), "shorter"),
                         (np.full(20000, np.nan, np.float32), "NaN")):
        with pytest.raises(ValueError, match=problem):
            audio.AudioPipeline(bad, vad=object())  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        audio.load_speech("no-such-clip")


@needs_silero
@needs_speech
def test_batched_vad_matches_streaming_model(pipeline):
    x = torch.from_numpy(pipeline.interval_audio(0).astype(np.float32) / 32768.0)[None]
    ours = pipeline.vad(x)
    assert ours.shape == (1, pipeline.chunks)
    torch.testing.assert_close(ours, pipeline.vad.streaming(x), atol=1e-5, rtol=0)


@needs_silero
@needs_speech
def test_dnn_grad_is_finite_and_nonzero(pipeline):
    from edgert.adapt.ascent import dnn_grad

    rendered = pipeline.render(0, np.array([0.5]))
    grad = dnn_grad(pipeline, rendered.inputs)
    assert grad.shape == rendered.inputs.shape
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    silence = dnn_grad(pipeline, torch.zeros_like(rendered.inputs))  # sqrt(0) in the STFT: no NaN
    assert torch.isfinite(silence).all()


@needs_silero
@needs_speech
@pytest.mark.parametrize("codec", audio.CODECS)
def test_bytes_grow_with_rate_and_inputs_keep_their_shape(pipeline, codec):
    pipe = audio.AudioPipeline(pipeline.samples[: 2 * pipeline.interval_samples] / 32768.0, codec=codec,
                               vad=pipeline.vad)
    rendered = [pipe.render(0, k) for k in pipe.grid()]
    sizes = [r.resource for r in rendered]
    assert [r.info["rate"] for r in rendered] == list(audio.DEFAULT_RATES)
    assert all(a < b for a, b in zip(sizes, sizes[1:])), sizes
    assert {tuple(r.inputs.shape) for r in rendered} == {(1, pipe.interval_samples)}
    if codec == "pcm_s16le":
        assert sizes == [2.0 * pipe.interval_samples * r / 16000 for r in audio.DEFAULT_RATES]


@needs_silero
@needs_speech
def test_full_rate_scores_one_and_4k_scores_lower(pipeline):
    full, low = pipeline.grid()[-1], pipeline.grid()[0]
    scores_full, scores_low = [], []
    for t in range(pipeline.num_intervals()):
        rendered = pipeline.render(t, full)
        assert torch.equal(rendered.inputs[0], torch.from_numpy(pipeline.interval_audio(t) / 32768.0).float())
        scores_full.append(pipeline.score(pipeline.outputs(rendered), pipeline.truth(t)))
        scores_low.append(pipeline.score(pipeline.outputs(pipeline.render(t, low)), pipeline.truth(t)))
    assert scores_full == [1.0] * pipeline.num_intervals()
    assert np.mean(scores_low) < 1.0
    assert all(0.0 <= s <= 1.0 for s in scores_low)


@needs_silero
@needs_speech
def test_oneadapt_one_backward_per_interval(pipeline, monkeypatch):
    from edgert.adapt.ascent import AdaptConfig, OneAdapt

    calls = []
    grad = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **kw: calls.append(1) or grad(*a, **kw))
    result = OneAdapt(pipeline, AdaptConfig(lam=0.5)).run(intervals=[0, 1, 2])
    assert len(calls) == 3
    assert [r.backward_passes for r in result.trace] == [1, 1, 1]
    assert all(np.isfinite(r.acc_grad[0]) and r.resource_grad[0] != 0 for r in result.trace)
    assert 0.0 <= result.accuracy <= 1.0 and result.resource > 0


@needs_silero
@needs_speech
def test_vad_heuristic_switches_rates_and_accounts_bytes_as_render(pipeline):
    from edgert.adapt.baselines import Measurer

    measurer = Measurer(pipeline)
    every = audio.vad_heuristic(measurer, threshold_db=-200.0)
    none = audio.vad_heuristic(measurer, threshold_db=200.0)
    assert {r.knobs["sample_rate"] for r in every.trace} == {16000.0}
    assert {r.knobs["sample_rate"] for r in none.trace} == {4000.0}
    mid = audio.vad_heuristic(measurer, threshold_db=-40.0)
    rates = {r.knobs["sample_rate"] for r in mid.trace}
    assert rates == {4000.0, 16000.0}  # the silence gaps go at 4 kHz
    for r in mid.trace:
        k = pipeline.knobs.from_values(r.knobs)
        assert r.resource == pipeline.render(r.interval, k).resource
    # FLAC spends about the same ~10 bytes per frame on digital silence at any rate, so silence at 4 kHz saves
    # nothing here: only the ends of the order are strict
    assert none.resource < min(mid.resource, every.resource)
    assert every.accuracy == 1.0 and mid.overhead["backward_per_interval"] == 0


@needs_silero
@needs_speech
def test_default_input_has_speech_and_non_speech_intervals():
    speech = audio.speech_input()
    assert len(speech.segments) == len(audio.DEFAULT_INPUT)
    pipe = audio.AudioPipeline(speech.audio)
    fractions = [float((pipe.truth(t) > 0.5).float().mean()) for t in range(pipe.num_intervals())]
    assert len(fractions) >= 20
    assert sum(f > 0.25 for f in fractions) >= 10 and sum(f == 0.0 for f in fractions) >= 5
