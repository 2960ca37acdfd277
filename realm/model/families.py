"""Imports every built-in model family so that each registers itself."""

from realm.model import llama  # noqa: F401
