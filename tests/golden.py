"""llama.cpp's reference outputs for the two real models, and the bounds realm must meet.

The .npz files in tests/data/ come from llama.cpp (see tests/data/README.md). The bounds are
those an independent float32 implementation meets against the same outputs.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).parent / "data"

MIN_COSINE = 0.998
MAX_KL = 0.01
MIN_GREEDY_AGREEMENT = 0.9

GOLDEN_FILES = {
    "smollm2": DATA / "smollm2-135m-instruct-q4_1.npz",
    "gemma3": DATA / "gemma-3-270m-q4_k_m.npz",
}


@dataclass
class Golden:
    corpus: dict[str, list[int]]
    prompts: list[np.ndarray]
    logits: list[np.ndarray]
    greedy: dict[str, dict]


def load_golden(name: str) -> Golden:
    z = np.load(GOLDEN_FILES[name])
    n = sum(1 for k in z.files if k.startswith("prompt_tokens_"))
    return Golden(
        corpus=json.loads(str(z["corpus_tokens"])),
        prompts=[z[f"prompt_tokens_{j}"].astype(np.int64) for j in range(n)],
        logits=[z[f"logits_{j}"].astype(np.float32) for j in range(n)],
        greedy=json.loads(str(z["greedy"])),
    )


def model_path(name: str) -> Path:
    """The real model file; a failure when REALM_REQUIRE_MODELS is set, else a skip, if absent."""
    from realm.errors import ModelNotFoundError
    from realm.models_on_pypi import gemma3_path, smollm2_path

    try:
        return {"smollm2": smollm2_path, "gemma3": gemma3_path}[name]()
    except ModelNotFoundError as exc:
        if os.environ.get("REALM_REQUIRE_MODELS"):
            pytest.fail(f"{exc} (REALM_REQUIRE_MODELS is set)", pytrace=False)
        pytest.skip(str(exc))


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def kl_divergence(reference: np.ndarray, other: np.ndarray) -> float:
    """KL(reference || other) of the softmax distributions."""
    p = log_softmax(reference)
    return float(np.sum(np.exp(p) * (p - log_softmax(other))))
