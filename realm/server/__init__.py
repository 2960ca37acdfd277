"""realm's OpenAI-compatible HTTP server (``realm serve``); needs the ``server`` extra."""

from __future__ import annotations

from realm.server.app import create_app
from realm.server.registry import ModelRegistry, ModelSpec, ServedModel

__all__ = ["ModelRegistry", "ModelSpec", "ServedModel", "create_app"]
