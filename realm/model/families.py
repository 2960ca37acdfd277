"""Imports every built-in model family so that each registers itself."""

from realm.model import gemma3, llama, qwen2, qwen3  # noqa: F401
