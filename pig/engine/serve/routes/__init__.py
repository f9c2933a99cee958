"""The routes, one module per group; each ``register(ctx)`` adds its routes to the app.

Adding an endpoint group is one module here plus its name in :data:`GROUPS`.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, FastAPI

from pig.engine.serve.fastlane import FastLane
from pig.engine.serve.service import Service


@dataclass(frozen=True)
class Context:
    """What a route group registers on: the service, the FastAPI app (open routes), the
    router of key-guarded data routes and the fast lane (hot routes)."""

    service: Service
    app: FastAPI
    api: APIRouter
    lane: FastLane


GROUPS = ("search", "openai", "videos", "operations", "page", "docs")
