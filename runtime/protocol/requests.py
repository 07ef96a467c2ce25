"""The request schema of each endpoint (runtime/spec.py's ENDPOINTS), by capability."""

from __future__ import annotations

from runtime.protocol.audio import CreateSpeechRequest, CreateTranscriptionRequest, CreateTranslationRequest
from runtime.protocol.chat import CreateChatCompletionRequest
from runtime.protocol.common import OpenAIRequest
from runtime.protocol.completions import CreateCompletionRequest
from runtime.protocol.embeddings import CreateEmbeddingRequest
from runtime.protocol.images import CreateImageEditRequest, CreateImageRequest
from runtime.protocol.rerank import RerankRequest
from runtime.protocol.tokenize import DetokenizeRequest, TokenizeRequest

REQUEST_SCHEMAS: dict[str, type[OpenAIRequest]] = {
    "chat": CreateChatCompletionRequest,
    "completions": CreateCompletionRequest,
    "embeddings": CreateEmbeddingRequest,
    "images": CreateImageRequest,
    "image_edits": CreateImageEditRequest,
    "speech": CreateSpeechRequest,
    "transcriptions": CreateTranscriptionRequest,
    "translations": CreateTranslationRequest,
    "rerank": RerankRequest,
    "tokenize": TokenizeRequest,
    "detokenize": DetokenizeRequest,
}
