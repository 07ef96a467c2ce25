"""Worker routes for this capability: OpenAI protocol <-> engine (placeholder: its owner fills it in)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def create_router(engine: Any) -> APIRouter:
    return APIRouter()
