"""Log-probabilities in OpenAI's two shapes, from the model's raw logits.

A token's log-probability is taken from the logits the model gave before any sampling step
(temperature, top-k, penalties), as vLLM reports them by default: it scores the text, not
the sampler. Chat completions list one entry per token with its text, bytes and alternatives;
completions (the legacy shape an evaluation harness reads) give parallel lists, and with
``echo`` the prompt's tokens first, the first of them without a log-probability.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from realm.generate import log_softmax
from realm.tokenizer import Tokenizer


def _top(logp: np.ndarray, n: int) -> list[int]:
    """The ``n`` most likely token ids, most likely first (ties by id)."""
    if n <= 0:
        return []
    n = min(n, logp.shape[0])
    candidates = np.argpartition(-logp, n - 1)[:n]
    return sorted(candidates.tolist(), key=lambda t: (-logp[t], t))


def token_text(tokenizer: Tokenizer, token: int) -> tuple[str, list[int]]:
    """A token's text (a lone piece of a UTF-8 character shows as U+FFFD) and its bytes."""
    raw = tokenizer.token_to_bytes(token, special=True)
    return raw.decode("utf-8", errors="replace"), list(raw)


def chat_entry(tokenizer: Tokenizer, logits: np.ndarray, token: int, n_top: int) -> dict:
    """One token's entry of a chat choice's ``logprobs.content``."""
    logp = log_softmax(logits)

    def item(t: int) -> dict:
        text, raw = token_text(tokenizer, t)
        return {"token": text, "logprob": float(logp[t]), "bytes": raw}

    return {**item(token), "top_logprobs": [item(t) for t in _top(logp, n_top)]}


def completion_logprobs(
    tokenizer: Tokenizer,
    tokens: Sequence[int],
    rows: Sequence[np.ndarray | None],
    n_top: int,
    start_offset: int = 0,
) -> dict:
    """The legacy ``logprobs`` object: ``rows[i]`` are the logits token ``i`` was drawn from
    (None: no logits, the first token of an echoed prompt)."""
    out: dict = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
    offset = start_offset
    for token, row in zip(tokens, rows, strict=True):
        text, _ = token_text(tokenizer, token)
        out["tokens"].append(text)
        out["text_offset"].append(offset)
        offset += len(text)
        if row is None:
            out["token_logprobs"].append(None)
            out["top_logprobs"].append(None)
            continue
        logp = log_softmax(row)
        out["token_logprobs"].append(float(logp[token]))
        out["top_logprobs"].append({token_text(tokenizer, t)[0]: float(logp[t]) for t in _top(logp, n_top)})
    return out
