"""Audio encode and decode with PyAV (FFmpeg inside the wheel, no system ffmpeg).

Uploads are sniffed by their bytes and opened with that demuxer only, so FFmpeg never probes
its way into formats that fetch other resources (playlists, concat lists). Speech is encoded
incrementally: an AudioEncoder takes int16 chunks and returns whatever bytes the muxer has
ready, so a response can stream while later sentences are still being synthesised.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np

from runtime.errors import InvalidRequestError

WHISPER_RATE = 16000
SPEECH_RATE = 24000  # OpenAI's output rate for every speech format; `pcm` has no header to say so
SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
CONTENT_TYPES = {
    "mp3": "audio/mpeg",
    "opus": "audio/opus",
    "aac": "audio/aac",
    "flac": "audio/flac",
    "wav": "audio/wav",
    "pcm": "audio/pcm",
}
# response_format -> (muxer, encoder); aac is ADTS like OpenAI's, opus is Ogg Opus
_MUXER_OPTIONS = {"ogg": {"page_duration": "100000"}}  # 100 ms Ogg pages instead of 1 s, for streaming
_MUXERS = {
    "mp3": ("mp3", "libmp3lame"),
    "opus": ("ogg", "libopus"),
    "aac": ("adts", "aac"),
    "flac": ("flac", "flac"),
    "wav": ("wav", "pcm_s16le"),
}
UPLOAD_FORMATS = ("flac", "m4a", "mp3", "mp4", "mpeg", "mpga", "oga", "ogg", "wav", "webm")
_UNSUPPORTED = f"Invalid file format. Supported formats: {list(UPLOAD_FORMATS)}"


def sniff_container(data: bytes) -> str | None:
    """The FFmpeg demuxer for an upload, from its leading bytes; None when it is no audio we take."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "wav"
    if data[:4] == b"fLaC":
        return "flac"
    if data[:4] == b"OggS":
        return "ogg"
    if data[:4] == b"\x1a\x45\xdf\xa3":
        return "matroska"  # also webm
    if data[4:8] == b"ftyp":
        return "mov"  # mp4, m4a
    if data[:3] == b"ID3":
        return "mp3"
    if len(data) >= 2 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0:
        layer = (data[1] >> 1) & 0x3
        return "mp3" if layer else "aac"  # layer 0 is an ADTS header
    return None


def decode_audio(data: bytes, rate: int = WHISPER_RATE) -> np.ndarray:
    """Any supported upload -> float32 mono samples at `rate`; InvalidRequestError when it isn't audio."""
    if not data:
        raise InvalidRequestError("The audio file is empty.", param="file", code="invalid_value")
    container_format = sniff_container(data)
    if container_format is None:
        raise InvalidRequestError(_UNSUPPORTED, param="file", code="invalid_value")
    import av

    try:
        samples = _decode(av, data, container_format, rate)
    except av.FFmpegError as exc:
        raise InvalidRequestError(
            "The audio file could not be decoded; it may be corrupted or in an unsupported format.",
            param="file", code="invalid_value",
        ) from exc
    if samples.size == 0:
        raise InvalidRequestError("The audio file contains no audio.", param="file", code="invalid_value")
    return samples


def _decode(av: Any, data: bytes, container_format: str, rate: int) -> np.ndarray:
    with av.open(io.BytesIO(data), format=container_format) as container:
        if not container.streams.audio:
            raise InvalidRequestError("The file has no audio track.", param="file", code="invalid_value")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
        parts = []
        for frame in container.decode(stream):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


@dataclass(frozen=True)
class AudioProbe:
    codec: str
    sample_rate: int
    channels: int
    duration: float  # seconds, from the decoded samples


def probe_audio(data: bytes, response_format: str) -> AudioProbe:
    """Decode encoded speech fully and describe it (raw `pcm` is read as 24 kHz s16le mono)."""
    if response_format == "pcm":
        return AudioProbe("pcm_s16le", SPEECH_RATE, 1, len(data) / 2 / SPEECH_RATE)
    import av

    with av.open(io.BytesIO(data), format=_MUXERS[response_format][0]) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return AudioProbe(stream.codec_context.name, stream.codec_context.sample_rate,
                          stream.codec_context.channels, samples / stream.codec_context.sample_rate)


class _Sink:
    """A write-only file for the muxer: without seek, FFmpeg writes streamable output."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []

    def write(self, data: Any) -> int:
        self._chunks.append(bytes(data))
        return len(data)

    def take(self) -> bytes:
        out = b"".join(self._chunks)
        self._chunks.clear()
        return out


class AudioEncoder:
    """int16 mono chunks at `input_rate` in, `response_format` bytes at 24 kHz out, incrementally."""

    def __init__(self, response_format: str, input_rate: int) -> None:
        import av

        self._av = av
        self.content_type = CONTENT_TYPES[response_format]
        self._input_rate = input_rate
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=SPEECH_RATE)
        self._sink = _Sink()
        self._container: Any = None
        self._stream: Any = None
        if response_format != "pcm":
            muxer, codec = _MUXERS[response_format]
            self._container = av.open(self._sink, mode="w", format=muxer, options=_MUXER_OPTIONS.get(muxer))
            self._stream = self._container.add_stream(codec, rate=SPEECH_RATE, layout="mono")

    def encode(self, samples: np.ndarray) -> bytes:
        if samples.size == 0:
            return b""
        frame = self._av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = self._input_rate
        return self._write(self._resampler.resample(frame))

    def finish(self) -> bytes:
        """Flush the resampler, the codec and the muxer; the encoder is done after this."""
        out = self._write(self._resampler.resample(None))
        if self._container is None:
            return out
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        return out + self._sink.take()

    def _write(self, frames: list[Any]) -> bytes:
        if self._container is None:
            return b"".join(bytes(frame.planes[0])[: frame.samples * 2] for frame in frames)
        for frame in frames:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        return self._sink.take()


def encode_audio(samples: np.ndarray, input_rate: int, response_format: str) -> bytes:
    """One-shot encode of a whole int16 clip."""
    encoder = AudioEncoder(response_format, input_rate)
    return encoder.encode(samples) + encoder.finish()
