"""The model contract: kinds and what they serve, the endpoint table, and what a worker loads.

The server's routes and the worker's routes are both built from ENDPOINTS; the server routes a
request by its model's kind before any engine is loaded (a loaded engine reports its own
`capabilities`, a subset).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.options import EngineOptions


@dataclass(frozen=True)
class Kind:
    name: str
    engine: str  # the engine that serves it: a key of runtime.engines.ENGINES
    capabilities: frozenset[str]
    parallel: int  # requests a worker runs at once when neither its engine nor --parallel says


KINDS = {kind.name: kind for kind in (
    Kind("llm", "llama", frozenset({"chat", "completions", "embeddings", "tokenize", "detokenize"}), 4),
    Kind("embedding", "llama", frozenset({"embeddings", "tokenize", "detokenize"}), 4),
    Kind("rerank", "llama", frozenset({"rerank", "tokenize", "detokenize"}), 4),  # cross-encoders (rank pooling)
    Kind("image", "diffusion", frozenset({"images", "image_edits"}), 1),
    Kind("speech", "piper", frozenset({"speech"}), 1),
    Kind("transcription", "whisper", frozenset({"transcriptions", "translations"}), 1),
)}


@dataclass(frozen=True)
class Endpoint:
    path: str  # under each API prefix
    capability: str
    operation_id: str
    multipart: bool = False  # also takes multipart/form-data (uploads)
    media_types: tuple[str, ...] = ("application/json", "text/event-stream")


ENDPOINTS = (
    Endpoint("/chat/completions", "chat", "createChatCompletion"),
    Endpoint("/completions", "completions", "createCompletion"),
    Endpoint("/embeddings", "embeddings", "createEmbedding"),
    Endpoint("/images/generations", "images", "createImage"),
    Endpoint("/images/edits", "image_edits", "createImageEdit", multipart=True),
    Endpoint("/audio/speech", "speech", "createSpeech",
             media_types=("application/octet-stream", "audio/*", "text/event-stream")),
    Endpoint("/audio/transcriptions", "transcriptions", "createTranscription", multipart=True,
             media_types=("application/json", "text/plain", "text/event-stream")),
    Endpoint("/audio/translations", "translations", "createTranslation", multipart=True,
             media_types=("application/json", "text/plain")),
    Endpoint("/rerank", "rerank", "createRerank", media_types=("application/json",)),
    Endpoint("/tokenize", "tokenize", "tokenize", media_types=("application/json",)),
    Endpoint("/detokenize", "detokenize", "detokenize", media_types=("application/json",)),
)
# The agent APIs, served by the server on top of a model's chat capability (runtime/agents/).
AGENT_APIS = {"/responses": "chat", "/messages": "chat"}
API_PREFIXES = ("/v1-openai", "/v1")
WORKER_PREFIX = "/v1"  # workers serve each endpoint once, under this prefix


def served_apis(capabilities: frozenset[str]) -> list[str]:
    """The API paths a model with `capabilities` answers on, e.g. ["/chat/completions", "/responses"]."""
    paths = [e.path for e in ENDPOINTS if e.capability in capabilities]
    return paths + [path for path, needs in AGENT_APIS.items() if needs in capabilities]


def model_capabilities(kind: str, metadata: dict[str, Any]) -> frozenset[str]:
    """What a registered model serves: its kind's capabilities, and "vision" (image input to chat) when
    it came with an mmproj projector."""
    capabilities = KINDS[kind].capabilities
    if "chat" in capabilities and metadata.get("has_mmproj"):
        return capabilities | {"vision"}
    return capabilities


def worker_path(capability: str) -> str:
    """The path a worker serves `capability` on, e.g. /v1/chat/completions."""
    return WORKER_PREFIX + next(e.path for e in ENDPOINTS if e.capability == capability)


@dataclass(frozen=True)
class WorkerLimits:
    """Limits a worker enforces, handed down by the server (a worker never reads the config)."""

    max_upload_bytes: int = 25 * 1024 * 1024
    image_dir: Path | None = None  # where `response_format: url` images go, served by the server
    image_url_ttl: float = 3600.0
    image_fetch_private: bool = False  # chat image URLs may name loopback, link-local and private addresses

    def to_json(self) -> dict[str, Any]:
        return {"max_upload_bytes": self.max_upload_bytes, "image_url_ttl": self.image_url_ttl,
                "image_dir": None if self.image_dir is None else str(self.image_dir),
                "image_fetch_private": self.image_fetch_private}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WorkerLimits:
        image_dir = data.get("image_dir")
        return cls(int(data["max_upload_bytes"]), None if image_dir is None else Path(image_dir),
                   float(data["image_url_ttl"]), bool(data.get("image_fetch_private", False)))


@dataclass(frozen=True)
class ModelSpec:
    """What a worker needs to load and serve one model (built from the registry)."""

    name: str
    kind: str  # a key of KINDS
    engine: str  # a key of runtime.engines.ENGINES ("fake" in plumbing tests)
    files: dict[str, Path]  # role -> path; "model" always, plus e.g. "mmproj", "vae", "taesd", "config"
    metadata: dict[str, Any] = field(default_factory=dict)
    options: EngineOptions = field(default_factory=EngineOptions)
    limits: WorkerLimits = field(default_factory=WorkerLimits)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form the scheduler hands to a worker process."""
        files = {role: str(path) for role, path in self.files.items()}
        return {"name": self.name, "kind": self.kind, "engine": self.engine, "files": files,
                "metadata": self.metadata, "options": self.options.as_dict(), "limits": self.limits.to_json()}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        files = {role: Path(path) for role, path in data.get("files", {}).items()}
        limits = WorkerLimits.from_json(data["limits"]) if "limits" in data else WorkerLimits()
        return cls(data["name"], data["kind"], data["engine"], files, data.get("metadata", {}),
                   EngineOptions.from_dict(data.get("options")), limits)
