"""Audio pipeline for OneAdapt: the knob is the sample rate a device uploads at, the resource the bytes it sends, the
DNN Silero VAD (voice-activity detection) on the server.

The device holds 16 kHz, 16-bit mono audio. For every adaptation interval (:data:`CHUNK` x ``chunks`` samples at
16 kHz, 1.024 s by default, so that the interval is a whole number of the VAD's 512-sample windows) it

1. resamples the interval to the knob's rate (libswresample through PyAV, flushed so the length is exact and the
   output is not delayed),
2. encodes it as a **FLAC** stream (lossless and really compressed: its size grows with the sample rate *and* with
   the content -- digital silence costs ~10 bytes per frame, speech ~1.1 bytes per sample) or, with
   ``codec="pcm_s16le"``, as raw 16-bit PCM (exactly ``2 x rate`` bytes per second); the resource is the bytes of
   the encoded packets (FLAC's 34-byte stream header, sent once per stream, is not counted);

and the server decodes the stream, resamples it back to 16 kHz and runs Silero VAD on it. The input the DNN sees is
``[1, chunks x 512]`` float32 in ``[-1, 1)`` whatever the knob, so OneAdapt's ``InputGrad`` is a plain difference.

FLAC is lossless, so everything the knob removes is the band above the new Nyquist frequency (and the resampler's
imprecision): at 16 kHz the rendered input is bit-identical to the original and scores 1.0. Among the codecs PyAV
offers here, the lossy ones fix their bit rate independently of the sample rate (AAC, Opus, MP3) or support only a
few rates (Opus: 8/12/16/24/48 kHz; AMR: 8 or 16 kHz), so FLAC is the codec whose bytes follow this knob.

Ground truth is the VAD on the original 16 kHz audio; accuracy is the fraction of 32 ms chunks whose thresholded
(0.5) speech decision matches the truth's. The output utility is the speech-probability mass
(:func:`edgert.adapt.utility.speech_mass`).

The VAD (:class:`SileroVAD`) runs the layers of the packaged TorchScript model (``silero-vad``, extra ``[audio]``)
directly: the convolutional front end on all chunks of an interval as one batch (each chunk with the previous chunk's
last 64 samples as context, zeros for the first) and the LSTM cell over the chunks in order from a zero state. That
is what the streaming model computes after ``reset_states()`` (checked in the tests), without its hidden state, so
every interval is deterministic and differentiable with respect to the input.

Real speech comes from Debian packages: ``pocketsphinx-testdata`` (16 kHz: LibriVox readings, spoken commands,
digits) and ``alsa-utils`` (48 kHz speaker-test voice prompts and one noise clip). :func:`speech_input` concatenates
them with silence gaps into a test input with speech and non-speech intervals.
"""
from __future__ import annotations

import importlib.util
import warnings
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from edgert.adapt.ascent import AdaptError, Rendered, SchemeResult
from edgert.adapt.baselines import Measurer, schedule
from edgert.adapt.knobs import Knob, KnobSpace
from edgert.adapt.utility import speech_mass

#: Sample rate of the device's audio, the VAD's input and the ground truth (Hz).
RATE = 16000
#: Samples per VAD chunk at 16 kHz (Silero VAD's window: 32 ms).
CHUNK = 512
#: Samples of the previous chunk Silero VAD prepends to each chunk.
CONTEXT = 64
#: Sample rates the device may upload at (Hz), lowest first.
DEFAULT_RATES = (4000, 6000, 8000, 12000, 16000)
CODECS = ("flac", "pcm_s16le")

_PSPHINX = Path("/usr/share/pocketsphinx/test/data")
_ALSA = Path("/usr/share/sounds/alsa")
# name -> file; the .raw files are headerless 16 kHz 16-bit little-endian mono (pocketsphinx's test format)
_SPEECH_FILES: tuple[tuple[str, Path], ...] = (
    *((f"cards-{i:03d}", _PSPHINX / "cards" / f"{i:03d}.wav") for i in range(1, 6)),
    *((f"librivox-{n}", _PSPHINX / "librivox" / f"sense_and_sensibility_01_austen_64kb-{n}.wav")
      for n in ("0870", "0880", "0890", "0920", "0930")),
    ("goforward", _PSPHINX / "goforward.raw"),
    ("numbers", _PSPHINX / "numbers.raw"),
    ("something", _PSPHINX / "something.raw"),
    ("tidigits-2934z", _PSPHINX / "tidigits" / "dhd.2934z.raw"),
    *((f"alsa-{n.lower().replace('_', '-')}", _ALSA / f"{n}.wav")
      for n in ("Front_Center", "Front_Left", "Front_Right", "Rear_Center", "Rear_Left", "Rear_Right", "Side_Left",
                "Side_Right")),
)
_NOISE_FILES: tuple[tuple[str, Path], ...] = (("alsa-noise", _ALSA / "Noise.wav"),)
_RAW_RATE = 16000

#: The clips :func:`speech_input` concatenates by default (50.4 s with the gaps: 49 intervals of 1.024 s, 33 with
#: speech chunks by the VAD on the original, 16 without; the alsa-noise clip is real noise and no speech).
DEFAULT_INPUT = ("librivox-0870", "cards-001", "alsa-front-center", "numbers", "alsa-noise", "librivox-0880",
                 "cards-002", "goforward", "alsa-rear-left", "librivox-0930", "cards-005", "something")
#: Seconds of digital silence after each clip of :data:`DEFAULT_INPUT`, cycled.
DEFAULT_GAPS = (1.0, 2.5, 0.5, 1.5)


def speech_clips(include_noise: bool = False) -> dict[str, Path]:
    """The real recordings installed here, by name (only those whose file exists).

    Speech: ``librivox-*`` (LibriVox readings, 3-7 s), ``cards-*`` (spoken card names, 1-3.5 s), ``goforward``,
    ``numbers``, ``something``, ``tidigits-2934z`` (commands and digits, 2-4 s), all 16 kHz from Debian's
    ``pocketsphinx-testdata``; ``alsa-*`` (``"front center"``, ... voice prompts, 1.3-1.5 s, 48 kHz) from
    ``alsa-utils``. ``include_noise`` adds ``alsa-noise`` (1.4 s of noise from ``alsa-utils``, no speech).
    """
    files = _SPEECH_FILES + (_NOISE_FILES if include_noise else ())
    return {name: path for name, path in files if path.is_file()}


def _clip_path(path_or_name: Union[str, Path]) -> Path:
    if isinstance(path_or_name, str) and not any(s in path_or_name for s in "/\\."):
        clips = speech_clips(include_noise=True)
        if path_or_name not in clips:
            known = [n for n, _ in _SPEECH_FILES + _NOISE_FILES]
            raise FileNotFoundError(f"speech clip {path_or_name!r}: not installed here (apt-get install "
                                    f"pocketsphinx-testdata alsa-utils) or unknown; names: {known}")
        return clips[path_or_name]
    path = Path(path_or_name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    return path


def _decode_av(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and their rate, by PyAV (any container and codec FFmpeg reads)."""
    try:
        import av  # noqa: PLC0415  (optional: extra [video]/[audio])
    except ImportError:
        raise ValueError(f"{path}: decoding anything but WAV needs PyAV (pip install av)") from None
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise ValueError(f"{path}: no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate or 0)
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate or None)
            parts = [f.to_ndarray().reshape(-1) for frame in container.decode(stream)
                     for f in resampler.resample(frame)]
            parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    except (av.FFmpegError, UnicodeDecodeError, EOFError) as exc:
        raise ValueError(f"{path}: cannot be decoded as audio ({exc})") from exc
    samples = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    return samples, rate


def _decode(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and their rate: .raw as pocketsphinx's raw PCM, PCM WAV by :mod:`wave`, else PyAV."""
    if path.suffix.lower() == ".raw":
        raw = path.read_bytes()
        if len(raw) % 2:
            raise ValueError(f"{path}: raw 16-bit PCM with an odd number of bytes ({len(raw)})")
        return np.frombuffer(raw, dtype="<i2").astype(np.int16), _RAW_RATE
    try:
        with wave.open(str(path), "rb") as w:
            if w.getsampwidth() != 2:
                return _decode_av(path)
            rate, channels = w.getframerate(), w.getnchannels()
            data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    except (wave.Error, EOFError):
        return _decode_av(path)
    usable = (data.size // channels) * channels
    mono = data[:usable].reshape(-1, channels).astype(np.int32).mean(axis=1)
    return np.round(mono).astype(np.int16), rate


def resample(samples: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Resample int16 mono ``[n]`` from ``src`` to ``dst`` Hz with libswresample (PyAV); identity when equal.

    The resampler is flushed, so the output holds ``round(n x dst / src)`` samples aligned with the input.
    """
    if samples.dtype != np.int16 or samples.ndim != 1:
        raise ValueError(f"samples: expected int16 [n], got {samples.dtype} {list(samples.shape)}")
    if src == dst or samples.size == 0:
        return samples.copy()
    import av  # noqa: PLC0415

    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples)[None, :], format="s16", layout="mono")
    frame.sample_rate = src
    resampler = av.AudioResampler(format="s16", layout="mono", rate=dst)
    parts = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    parts += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    out = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    want = int(round(samples.size * dst / src))
    if out.size >= want:
        return out[:want]
    return np.concatenate([out, np.zeros(want - out.size, np.int16)])


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.clip(np.round(np.asarray(audio, dtype=np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def load_speech(path_or_name: Union[str, Path], rate: int = RATE) -> np.ndarray:
    """A recording as float32 mono ``[n]`` in ``[-1, 1)`` (int16 / 32768) at ``rate`` Hz.

    Args:
        path_or_name: a name of :func:`speech_clips` (``"librivox-0870"``) or a file: ``.raw`` is read as 16 kHz
            16-bit little-endian mono (pocketsphinx's test format), 16-bit WAV by :mod:`wave`, anything else by
            PyAV. Several channels are averaged.
        rate: output sample rate (libswresample through PyAV when it differs from the file's).

    Raises:
        FileNotFoundError: no such file or clip name.
        ValueError: the file does not decode or holds no samples (the message names the file and the problem).
    """
    if rate <= 0:
        raise ValueError(f"rate: expected > 0 Hz, got {rate}")
    path = _clip_path(path_or_name)
    samples, src = _decode(path)
    if samples.size == 0:
        raise ValueError(f"{path}: audio with no samples")
    if src <= 0:
        raise ValueError(f"{path}: no sample rate")
    return resample(samples, src, rate).astype(np.float32) / 32768.0


@dataclass
class SpeechInput:
    """A test input: real clips concatenated with silence gaps.

    Attributes:
        audio: float32 ``[n]`` at :data:`RATE`.
        segments: ``(name, start_s, end_s)`` of every clip in ``audio`` (the rest is digital silence).
    """

    audio: np.ndarray
    segments: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.audio.size / RATE


def speech_input(names: Optional[Sequence[str]] = None, gaps: Sequence[float] = DEFAULT_GAPS,
                 lead: float = 0.0) -> SpeechInput:
    """Real clips (default :data:`DEFAULT_INPUT`: LibriVox readings, commands, digits, voice prompts and one
    noise clip) at 16 kHz, each followed by ``gaps[i % len(gaps)]`` seconds of digital silence, after ``lead``
    seconds of silence. Clips that are not installed make this fail (see :func:`speech_clips`)."""
    names = list(DEFAULT_INPUT if names is None else names)
    if not names:
        raise ValueError("speech_input: no clips named")
    if not gaps or any(g < 0 for g in gaps) or lead < 0:
        raise ValueError(f"speech_input: gaps and lead must be >= 0 (gaps {list(gaps)}, lead {lead})")
    parts = [np.zeros(int(round(lead * RATE)), np.float32)]
    segments = []
    at = parts[0].size
    for i, name in enumerate(names):
        clip = load_speech(name, RATE)
        segments.append((name, at / RATE, (at + clip.size) / RATE))
        gap = np.zeros(int(round(gaps[i % len(gaps)] * RATE)), np.float32)
        parts += [clip, gap]
        at += clip.size + gap.size
    return SpeechInput(np.concatenate(parts), segments)


def vad_model_path() -> Path:
    """The TorchScript Silero VAD shipped by the ``silero-vad`` package (found without importing the package,
    whose import sets torch's global thread count to 1)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("silero-vad is not installed (pip install silero-vad==6.2.3; extra [audio])")
    for root in spec.submodule_search_locations:
        path = Path(root) / "data" / "silero_vad.jit"
        if path.is_file():
            return path
    raise ImportError(f"silero-vad is installed but holds no data/silero_vad.jit "
                      f"(looked in {list(spec.submodule_search_locations)})")


class SileroVAD:
    """Silero VAD's 16 kHz model as a stateless, batched, differentiable function.

    ``vad(x)`` maps audio ``[B, n x 512]`` (float32, 16 kHz, ``[-1, 1]``) to speech probabilities ``[B, n]``, one per
    512-sample chunk, equal to the packaged streaming model's outputs for those chunks fed in order after
    ``reset_states()``. Parameters are frozen; gradients flow to ``x`` only.

    Args:
        path: the TorchScript file (default :func:`vad_model_path`).
    """

    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = Path(path) if path is not None else vad_model_path()
        with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript; the package ships the model as one
            warnings.simplefilter("ignore", DeprecationWarning)
            self.jit = torch.jit.load(str(self.path), map_location="cpu")
        self.jit.eval()
        for p in self.jit.parameters():
            p.requires_grad_(False)
        model = self.jit._model
        self._basis = model.stft.forward_basis_buffer.detach()
        self._hop = int(model.stft.hop_length)
        self._pad = [int(v) for v in model.stft.padding.padding]
        self._encoder = model.encoder
        self._rnn = model.decoder.rnn
        self._head = model.decoder.decoder

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] % CHUNK or x.shape[1] == 0:
            raise ValueError(f"x: expected float [B, n x {CHUNK}] at 16 kHz, got {x.dtype} {list(x.shape)}")
        b, n = x.shape[0], x.shape[1] // CHUNK
        chunks = x.float().reshape(b, n, CHUNK)
        context = torch.cat([chunks.new_zeros(b, 1, CONTEXT), chunks[:, :-1, -CONTEXT:]], dim=1)
        windows = torch.cat([context, chunks], dim=2).reshape(b * n, CONTEXT + CHUNK)
        features = self._encoder(self._magnitude(windows)).squeeze(-1).reshape(b, n, -1)
        h = features.new_zeros(b, features.shape[-1])
        c = torch.zeros_like(h)
        hidden = []
        for t in range(n):
            h, c = self._rnn(features[:, t], (h, c))
            hidden.append(h)
        out = self._head(torch.stack(hidden, dim=1).reshape(b * n, -1, 1))
        return out.reshape(b, n, -1).mean(dim=-1)

    def _magnitude(self, windows: torch.Tensor) -> torch.Tensor:
        """The model's STFT magnitude ``[M, 129, 4]`` of windows ``[M, 576]``; the square root's argument is
        clamped at 1e-20 (a change below 1e-10) so that digital silence has a finite gradient, not NaN."""
        padded = torch.nn.functional.pad(windows[:, None], self._pad, mode="reflect")
        spec = torch.nn.functional.conv1d(padded, self._basis, stride=self._hop)
        half = self._basis.shape[0] // 2
        return (spec[:, :half] ** 2 + spec[:, half:] ** 2).clamp_min(1e-20).sqrt()

    @torch.no_grad()
    def streaming(self, x: torch.Tensor) -> torch.Tensor:
        """The packaged model run chunk by chunk from a reset state (the reference :meth:`__call__` matches)."""
        if x.ndim != 2 or x.shape[1] % CHUNK:
            raise ValueError(f"x: expected float [B, n x {CHUNK}], got {list(x.shape)}")
        self.jit.reset_states()
        outs = [self.jit(x[:, i:i + CHUNK].float(), RATE) for i in range(0, x.shape[1], CHUNK)]
        self.jit.reset_states()
        return torch.cat(outs, dim=1)


def encode_decode(samples: np.ndarray, rate: int, codec: str = "flac") -> tuple[int, np.ndarray]:
    """Encode int16 mono ``[n]`` at ``rate`` Hz as one stream and decode it: ``(bytes of the packets, decoded)``.

    ``flac`` goes through FFmpeg's FLAC encoder and decoder (PyAV); ``pcm_s16le`` is ``2 n`` bytes, unchanged.
    Raises :class:`AdaptError` when the codec fails or the decoded length differs.
    """
    if codec == "pcm_s16le":
        return 2 * samples.size, samples.copy()
    if codec != "flac":
        raise ValueError(f"codec: expected one of {CODECS}, got {codec!r}")
    import av  # noqa: PLC0415

    try:
        enc = av.CodecContext.create("flac", "w")
        enc.sample_rate = rate
        enc.format = "s16"
        enc.layout = "mono"
        enc.open()
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples)[None, :], format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = 0
        packets = list(enc.encode(frame)) + list(enc.encode(None))
        dec = av.CodecContext.create("flac", "r")
        dec.sample_rate = rate
        dec.layout = "mono"
        if enc.extradata:
            dec.extradata = enc.extradata
        parts = [f.to_ndarray().reshape(-1) for p in packets for f in dec.decode(p)]
        parts += [f.to_ndarray().reshape(-1) for f in dec.decode(None)]
    except av.FFmpegError as exc:
        raise AdaptError(f"flac at {rate} Hz: {exc}") from exc
    decoded = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    if decoded.size != samples.size:
        raise AdaptError(f"flac at {rate} Hz: decoded {decoded.size} samples of {samples.size}")
    return sum(p.size for p in packets), decoded


class AudioPipeline:
    """Voice-activity detection on audio uploaded at an adaptable sample rate (OneAdapt's
    :class:`~edgert.adapt.ascent.Pipeline`; see the module docstring).

    Args:
        audio: the device's audio, float32 ``[n]`` at 16 kHz in ``[-1, 1]`` (e.g. :func:`speech_input`); a partial
            last interval is dropped.
        rates: the sample rates (Hz) the knob may take; ``chunks x 512 x rate / 16000`` must be whole.
        codec: ``flac`` (default) or ``pcm_s16le`` (see :func:`encode_decode`).
        chunks: VAD chunks (512 samples, 32 ms) per interval; 32 gives 1.024 s intervals.
        threshold: VAD probability above which a chunk is speech (for :meth:`score`).
        vad: the DNN (default: a new :class:`SileroVAD`).

    Raises:
        ValueError: audio that is empty, not 1-D, not finite or shorter than one interval; bad rates or codec.
    """

    name = "audio"
    resource_unit = "bytes"

    def __init__(self, audio: np.ndarray, *, rates: Sequence[int] = DEFAULT_RATES, codec: str = "flac",
                 chunks: int = 32, threshold: float = 0.5, vad: Optional[SileroVAD] = None) -> None:
        audio = np.asarray(audio)
        if audio.ndim != 1 or audio.size == 0:
            raise ValueError(f"audio: expected float [n] at 16 kHz with samples, got shape {list(audio.shape)}")
        if not np.all(np.isfinite(audio)):
            raise ValueError("audio: holds NaN or infinite samples")
        if chunks <= 0:
            raise ValueError(f"chunks: expected > 0, got {chunks}")
        if codec not in CODECS:
            raise ValueError(f"codec: expected one of {CODECS}, got {codec!r}")
        self.interval_samples = chunks * CHUNK
        if audio.size < self.interval_samples:
            raise ValueError(f"audio: {audio.size} samples, shorter than one interval ({self.interval_samples})")
        rates = sorted({int(r) for r in rates})
        bad = [r for r in rates if r <= 0 or r > RATE or (self.interval_samples * r) % RATE]
        if len(rates) < 2 or bad:
            raise ValueError(f"rates: expected >= 2 rates in (0, {RATE}] Hz giving whole samples per interval of "
                             f"{self.interval_samples}, got {rates}")
        self.samples = _to_int16(audio)
        self.rates = tuple(rates)
        self.codec = codec
        self.chunks = chunks
        self.threshold = float(threshold)
        self.vad = vad if vad is not None else SileroVAD()
        self.knobs = KnobSpace([Knob("sample_rate", float(rates[0]), float(rates[-1]),
                                     allowed=tuple(float(r) for r in rates), integer=True)])
        self._truth: dict[int, torch.Tensor] = {}

    @property
    def interval_seconds(self) -> float:
        return self.interval_samples / RATE

    def num_intervals(self) -> int:
        return self.samples.size // self.interval_samples

    def interval_audio(self, interval: int) -> np.ndarray:
        """The device's int16 samples ``[chunks x 512]`` of an interval (16 kHz)."""
        if not 0 <= interval < self.num_intervals():
            raise IndexError(f"interval {interval}: expected in [0, {self.num_intervals()})")
        start = interval * self.interval_samples
        return self.samples[start:start + self.interval_samples]

    def rate(self, k: np.ndarray) -> int:
        """The sample rate (Hz) applied at knob vector ``k``."""
        return int(self.knobs.values(k)["sample_rate"])

    def render(self, interval: int, k: np.ndarray) -> Rendered:
        """Resample to the knob's rate, encode, decode, resample to 16 kHz: inputs ``[1, chunks x 512]``."""
        rate = self.rate(k)
        source = self.interval_audio(interval)
        try:
            sent = resample(source, RATE, rate)
            nbytes, decoded = encode_decode(sent, rate, self.codec)
            back = resample(decoded, rate, RATE)
        except AdaptError:
            raise
        except (ValueError, RuntimeError) as exc:
            raise AdaptError(f"{self.codec} at {rate} Hz: {exc}") from exc
        inputs = torch.from_numpy(back.astype(np.float32) / 32768.0)[None]
        return Rendered(inputs, float(nbytes), self.chunks, {"rate": rate, "codec": self.codec})

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        """Speech probability per chunk ``[B, chunks]`` of inputs ``[B, chunks x 512]`` (differentiable)."""
        return self.vad(inputs)

    def utility(self, output: torch.Tensor) -> torch.Tensor:
        return speech_mass(output)

    @torch.no_grad()
    def outputs(self, rendered: Rendered) -> torch.Tensor:
        return self.vad(rendered.inputs)

    @torch.no_grad()
    def truth(self, interval: int) -> torch.Tensor:
        """The VAD on the original 16 kHz audio of the interval, ``[1, chunks]`` (computed once)."""
        if interval not in self._truth:
            x = torch.from_numpy(self.interval_audio(interval).astype(np.float32) / 32768.0)[None]
            self._truth[interval] = self.vad(x)
        return self._truth[interval]

    def score(self, output: torch.Tensor, reference: torch.Tensor) -> float:
        """Fraction of chunks whose speech decision (probability > threshold) matches the reference's."""
        if output.shape != reference.shape:
            raise ValueError(f"output {list(output.shape)} and reference {list(reference.shape)} differ in shape")
        if output.numel() == 0:
            raise ValueError("score: no chunks")
        return float(((output > self.threshold) == (reference > self.threshold)).double().mean())

    def region_masks(self, height: int, width: int) -> Optional[torch.Tensor]:
        return None

    def grid(self) -> list[np.ndarray]:
        """Knob vectors of the uniform sweep: one per allowed rate, lowest first."""
        return [self.knobs.from_values({"sample_rate": float(r)}) for r in self.rates]


def frame_energy_db(samples: np.ndarray, frame: int = CHUNK) -> np.ndarray:
    """RMS level (dBFS, -120 for digital silence) of each whole ``frame``-sample frame of int16 ``[n]``."""
    n = samples.size // frame
    x = samples[:n * frame].astype(np.float64).reshape(n, frame) / 32768.0
    return 10.0 * np.log10(np.maximum((x * x).mean(axis=1), 1e-12))


def vad_heuristic(measurer: Measurer, threshold_db: float = -40.0, min_frames: int = 1,
                  high: Optional[int] = None, low: Optional[int] = None) -> SchemeResult:
    """Energy-based voice-activity heuristic on the device: an interval with at least ``min_frames`` 32 ms frames
    at or above ``threshold_db`` dBFS RMS (on its full-rate 16 kHz audio) is uploaded at ``high`` Hz (default the
    highest rate), any other at ``low`` Hz (default the lowest). Bytes are those of :meth:`AudioPipeline.render`
    at the chosen rate; sweep ``threshold_db`` for the trade-off. ``measurer`` wraps an :class:`AudioPipeline`."""
    pipeline = measurer.pipeline
    if not isinstance(pipeline, AudioPipeline):
        raise TypeError(f"vad_heuristic needs an AudioPipeline, got {type(pipeline).__name__}")
    high = pipeline.rates[-1] if high is None else int(high)
    low = pipeline.rates[0] if low is None else int(low)
    for label, r in (("high", high), ("low", low)):
        if r not in pipeline.rates:
            raise ValueError(f"{label}: {r} Hz is not one of the pipeline's rates {list(pipeline.rates)}")
    k_high = pipeline.knobs.from_values({"sample_rate": float(high)})
    k_low = pipeline.knobs.from_values({"sample_rate": float(low)})
    audio = pipeline

    def choose(t: int) -> np.ndarray:
        active = int((frame_energy_db(audio.interval_audio(t)) >= threshold_db).sum())
        return k_high if active >= min_frames else k_low

    return schedule(measurer, choose, "vad-heuristic",
                    {"threshold_db": threshold_db, "min_frames": min_frames, "high": high, "low": low})
