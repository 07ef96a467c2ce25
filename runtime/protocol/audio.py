"""OpenAI wire schemas for /audio: speech, transcriptions and translations, and their responses."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from runtime.errors import InvalidRequestError
from runtime.protocol.common import OpenAIRequest

MAX_SPEECH_INPUT = 4096
SpeechFormat = Literal["mp3", "opus", "aac", "flac", "wav", "pcm"]
TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
AUDIO_TOKENS_PER_SECOND = 50  # Whisper's encoder frames: 1500 per 30 s window


class VoiceReference(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str


class CreateSpeechRequest(OpenAIRequest):
    model: str
    input: Annotated[str, Field(max_length=MAX_SPEECH_INPUT)]
    voice: str | VoiceReference
    instructions: Annotated[str | None, Field(max_length=MAX_SPEECH_INPUT)] = None  # accepted, not used
    response_format: SpeechFormat | None = None
    speed: Annotated[float | None, Field(ge=0.25, le=4.0)] = None
    stream_format: Literal["audio", "sse"] | None = None

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceReference) else self.voice

    def validate_semantics(self) -> None:
        if not self.input.strip():
            raise InvalidRequestError("Invalid value for 'input': the text to speak is empty.",
                                      param="input", code="invalid_value")


class _AudioUpload(OpenAIRequest):
    """Fields shared by transcriptions and translations (multipart, from `form_to_dict`)."""

    file: Any
    model: str
    prompt: str | None = None
    response_format: TranscriptFormat | None = None
    temperature: Annotated[float | None, Field(ge=0, le=1)] = None

    @field_validator("file")
    @classmethod
    def _is_upload(cls, value: Any) -> Any:
        if not hasattr(value, "read") or not hasattr(value, "filename"):
            raise ValueError("'file' must be an uploaded audio file, not a text field")
        return value


class CreateTranscriptionRequest(_AudioUpload):
    language: str | None = None
    timestamp_granularities: list[Literal["word", "segment"]] | None = None
    include: list[Literal["logprobs"]] | None = None
    stream: bool | None = None
    chunking_strategy: Literal["auto"] | dict[str, Any] | None = None

    @field_validator("timestamp_granularities", "include", mode="before")
    @classmethod
    def _one_as_list(cls, value: Any) -> Any:
        """A client that sends a single `key=value` part (without `[]`) means a one-item list."""
        return [value] if isinstance(value, str) else value


class CreateTranslationRequest(_AudioUpload):
    pass


# Responses


def speech_delta_event(audio_base64: str) -> dict[str, Any]:
    return {"type": "speech.audio.delta", "audio": audio_base64}


def speech_done_event(input_tokens: int, output_tokens: int) -> dict[str, Any]:
    usage = {"input_tokens": input_tokens, "output_tokens": output_tokens,
             "total_tokens": input_tokens + output_tokens}
    return {"type": "speech.audio.done", "usage": usage}


def duration_usage(duration: float) -> dict[str, Any]:
    return {"type": "duration", "seconds": math.ceil(duration)}


def token_usage(duration: float, output_tokens: int) -> dict[str, Any]:
    audio_tokens = math.ceil(duration * AUDIO_TOKENS_PER_SECOND)
    return {"type": "tokens", "input_tokens": audio_tokens,
            "input_token_details": {"text_tokens": 0, "audio_tokens": audio_tokens},
            "output_tokens": output_tokens, "total_tokens": audio_tokens + output_tokens}


def token_logprob(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode())}


def transcription_json(text: str, duration: float, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"text": text}
    if logprobs is not None:
        out["logprobs"] = logprobs
    out["usage"] = duration_usage(duration)
    return out


def transcription_segment(segment: Any) -> dict[str, Any]:
    """An engine TranscriptSegment -> OpenAI's TranscriptionSegment (all ten fields)."""
    return {"id": segment.id, "seek": segment.seek, "start": segment.start, "end": segment.end,
            "text": segment.text, "tokens": segment.tokens, "temperature": segment.temperature,
            "avg_logprob": segment.avg_logprob, "compression_ratio": segment.compression_ratio,
            "no_speech_prob": segment.no_speech_prob}


def transcription_verbose_json(task: str, language: str, duration: float, segments: list[Any],
                               granularities: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {"task": task, "language": language_name(language), "duration": duration,
                           "text": transcript_text(segments)}
    if "word" in granularities:
        out["words"] = [{"word": w.word.strip(), "start": w.start, "end": w.end}
                        for s in segments for w in s.words]
    if "segment" in granularities:
        out["segments"] = [transcription_segment(s) for s in segments]
    out["usage"] = duration_usage(duration)
    return out


def transcript_text(segments: list[Any]) -> str:
    return "".join(s.text for s in segments).strip()


def text_delta_event(delta: str, logprobs: list[dict[str, Any]] | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "transcript.text.delta", "delta": delta}
    if logprobs is not None:
        event["logprobs"] = logprobs
    return event


def text_done_event(text: str, logprobs: list[dict[str, Any]] | None, usage: dict[str, Any]) -> dict[str, Any]:
    event: dict[str, Any] = {"type": "transcript.text.done", "text": text}
    if logprobs is not None:
        event["logprobs"] = logprobs
    event["usage"] = usage
    return event


def format_srt(segments: list[Any]) -> str:
    """SubRip: numbered cues, comma before the milliseconds, a blank line after each cue."""
    return "".join(f"{n}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text.strip()}\n\n"
                   for n, s in enumerate(segments, start=1))


def format_vtt(segments: list[Any]) -> str:
    """WebVTT: the header, then cues with a dot before the milliseconds."""
    return "WEBVTT\n\n" + "".join(f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text.strip()}\n\n"
                                    for s in segments)


def _timestamp(seconds: float, decimal_mark: str) -> str:
    millis = round(max(seconds, 0.0) * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole:02d}{decimal_mark}{millis:03d}"


# Whisper's languages: verbose_json names the language in full, lowercase ("english")
_LANGUAGES = (
    "en:english,zh:chinese,de:german,es:spanish,ru:russian,ko:korean,fr:french,ja:japanese,pt:portuguese,"
    "tr:turkish,pl:polish,ca:catalan,nl:dutch,ar:arabic,sv:swedish,it:italian,id:indonesian,hi:hindi,"
    "fi:finnish,vi:vietnamese,he:hebrew,uk:ukrainian,el:greek,ms:malay,cs:czech,ro:romanian,da:danish,"
    "hu:hungarian,ta:tamil,no:norwegian,th:thai,ur:urdu,hr:croatian,bg:bulgarian,lt:lithuanian,la:latin,"
    "mi:maori,ml:malayalam,cy:welsh,sk:slovak,te:telugu,fa:persian,lv:latvian,bn:bengali,sr:serbian,"
    "az:azerbaijani,sl:slovenian,kn:kannada,et:estonian,mk:macedonian,br:breton,eu:basque,is:icelandic,"
    "hy:armenian,ne:nepali,mn:mongolian,bs:bosnian,kk:kazakh,sq:albanian,sw:swahili,gl:galician,mr:marathi,"
    "pa:punjabi,si:sinhala,km:khmer,sn:shona,yo:yoruba,so:somali,af:afrikaans,oc:occitan,ka:georgian,"
    "be:belarusian,tg:tajik,sd:sindhi,gu:gujarati,am:amharic,yi:yiddish,lo:lao,uz:uzbek,fo:faroese,"
    "ht:haitian creole,ps:pashto,tk:turkmen,nn:nynorsk,mt:maltese,sa:sanskrit,lb:luxembourgish,my:myanmar,"
    "bo:tibetan,tl:tagalog,mg:malagasy,as:assamese,tt:tatar,haw:hawaiian,ln:lingala,ha:hausa,ba:bashkir,"
    "jw:javanese,su:sundanese,yue:cantonese"
)
LANGUAGE_NAMES = dict(pair.split(":") for pair in _LANGUAGES.split(","))


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)
