"""Sampling, stop sequences and streaming text: what the engine does with each step's logits.

The sampler chain follows llama.cpp's default order: repetition penalty, top-k, top-p,
min-p, temperature, then a draw. Temperature 0 is greedy (argmax after the penalty).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from realm.arguments import is_int, is_number
from realm.errors import InvalidParameterError, NumericalError

__all__ = ["Completion", "InvalidParameterError", "Sampler", "SamplingParams", "TextAssembler"]


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen. Defaults are llama.cpp's."""

    temperature: float = 0.8
    top_k: int = 40  # 0 disables
    top_p: float = 0.95  # 1.0 disables
    min_p: float = 0.05  # 0.0 disables
    repeat_penalty: float = 1.0  # 1.0 disables
    repeat_last_n: int = 64
    seed: int | None = None
    # OpenAI's penalties, applied as llama.cpp does over the last repeat_last_n tokens (prompt
    # included): logit -= count * frequency_penalty + (count > 0) * presence_penalty; 0 disables
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0

    def __post_init__(self) -> None:
        def bad(name: str, expected: str) -> InvalidParameterError:
            value = getattr(self, name)
            return InvalidParameterError(f"{name} must be {expected}, got {value!r} ({type(value).__name__})")

        if not is_number(self.temperature) or not 0 <= self.temperature < math.inf:
            raise bad("temperature", "a finite number >= 0 (0 means greedy)")
        if not is_int(self.top_k) or self.top_k < 0:
            raise bad("top_k", "an integer >= 0 (0 disables it)")
        if not is_number(self.top_p) or not 0.0 < self.top_p <= 1.0:
            raise bad("top_p", "in (0, 1] (1 disables it)")
        if not is_number(self.min_p) or not 0.0 <= self.min_p <= 1.0:
            raise bad("min_p", "in [0, 1] (0 disables it)")
        if not is_number(self.repeat_penalty) or not 0.0 < self.repeat_penalty < math.inf:
            raise bad("repeat_penalty", "a finite number > 0 (1 disables it)")
        if not is_int(self.repeat_last_n) or self.repeat_last_n < 0:
            raise bad("repeat_last_n", "an integer >= 0")
        if self.seed is not None and (not is_int(self.seed) or self.seed < 0):
            raise bad("seed", "an integer >= 0 or None (None draws a fresh seed)")
        for name in ("frequency_penalty", "presence_penalty"):
            if not is_number(getattr(self, name)) or not math.isfinite(getattr(self, name)):
                raise bad(name, "a finite number (0 disables it)")


class Sampler:
    """Draws token ids from logits; the same seed gives the same draws."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self.rng = np.random.default_rng(params.seed)

    @property
    def _penalizes(self) -> bool:
        """Whether the parameters change logits of recent tokens (given a history)."""
        p = self.params
        penalties = p.repeat_penalty != 1.0 or p.frequency_penalty or p.presence_penalty
        return bool(penalties and p.repeat_last_n)

    @property
    def draws_argmax(self) -> bool:
        """Whether every draw is ``np.argmax`` of the logits as given (greedy, no penalty), so a
        caller may pick it without the logits (`Transformer.forward_greedy`)."""
        return self.params.temperature == 0 and not self._penalizes

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        logits = np.asarray(logits, dtype=np.float32)  # the caller's array: copied before any change
        # -inf masks a token out; NaN or +inf, or nothing left to draw from, has no meaning. One
        # pass finds all three: argmax stops at the first NaN, else at the first +inf, and
        # lands on -inf only when every logit is -inf (this runs once per generated token).
        best = int(np.argmax(logits)) if logits.size else -1
        if best < 0 or not math.isfinite(float(logits.flat[best])):
            raise NumericalError(
                "cannot sample from logits that are NaN, +inf or all -inf; the model or a hook "
                "produced them (check the file's weights, or the logits you passed)"
            )
        penalize = self._penalizes and bool(history)
        if p.temperature == 0 and not penalize:
            return best
        if penalize:
            logits = logits.copy()
            recent, counts = np.unique(
                np.asarray(history[-p.repeat_last_n :], dtype=np.int64), return_counts=True
            )
            if p.repeat_penalty != 1.0:
                vals = logits[recent]
                logits[recent] = np.where(vals > 0, vals / p.repeat_penalty, vals * p.repeat_penalty)
            if p.frequency_penalty or p.presence_penalty:
                logits[recent] -= (counts * p.frequency_penalty + p.presence_penalty).astype(np.float32)
        if p.temperature == 0:
            return int(np.argmax(logits))
        # candidates sorted by logit, best first
        k = logits.shape[0] if p.top_k == 0 else min(p.top_k, logits.shape[0])
        if k < logits.shape[0]:
            idx = np.argpartition(-logits, k - 1)[:k]
        else:
            idx = np.arange(logits.shape[0])
        idx = idx[np.argsort(-logits[idx], kind="stable")]
        cand = logits[idx].astype(np.float64)
        if p.top_p < 1.0:
            probs = _softmax(cand)
            cum = np.cumsum(probs)
            keep = int(np.searchsorted(cum, p.top_p) + 1)  # smallest prefix reaching top_p
            idx, cand = idx[:keep], cand[:keep]
        if p.min_p > 0.0:
            probs = _softmax(cand)
            keep_mask = probs >= p.min_p * probs[0]
            idx, cand = idx[keep_mask], cand[keep_mask]
        probs = _softmax(cand / p.temperature)
        return int(idx[self.rng.choice(len(idx), p=probs)])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-probabilities from logits along the last axis, in float64."""
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


@dataclass
class Completion:
    """What `Model.generate` returns when not streaming."""

    text: str
    tokens: list[int]
    finish_reason: str  # "stop" (end-of-generation token or stop string) or "length"
    prompt_tokens: int
    completion_tokens: int


class TextAssembler:
    """Turns generated tokens into text pieces: never splits a UTF-8 character, honours stop strings.

    Text that might be the start of a stop string is held back until it is clearly not.
    """

    def __init__(self, token_bytes: Callable[[int], bytes], stop: Iterable[str] = ()) -> None:
        self.token_bytes = token_bytes
        self.stop = [s for s in stop if s]
        self.pending_bytes = b""
        self.pending_text = ""
        self.text = ""  # everything emitted so far
        self.stopped = False

    def push(self, token: int) -> str:
        """Add a token; return the text that is now safe to emit (maybe empty)."""
        data = self.token_bytes(token)
        if not (self.stop or self.pending_bytes):  # the common case, in fewer steps: once per token
            try:
                piece = data.decode("utf-8")
            except UnicodeDecodeError:
                pass  # part of a character, or invalid: below
            else:
                self.text += piece
                return piece
        self.pending_bytes += data
        decoded, self.pending_bytes = _split_utf8(self.pending_bytes)
        self.pending_text += decoded
        for s in self.stop:
            at = self.pending_text.find(s)
            if at >= 0:
                self.stopped = True
                return self._emit(self.pending_text[:at], keep="")
        hold = max((_overlap(self.pending_text, s) for s in self.stop), default=0)
        cut = len(self.pending_text) - hold
        return self._emit(self.pending_text[:cut], keep=self.pending_text[cut:])

    def flush(self) -> str:
        """At the end: whatever is held back (an incomplete character becomes U+FFFD)."""
        tail = self.pending_text + self.pending_bytes.decode("utf-8", errors="replace")
        self.pending_bytes = b""
        return self._emit(tail, keep="")

    def _emit(self, piece: str, keep: str) -> str:
        self.pending_text = keep
        self.text += piece
        return piece


def _split_utf8(data: bytes) -> tuple[str, bytes]:
    """Decode ``data`` except a trailing, still incomplete UTF-8 character, which is returned as bytes."""
    i = len(data)
    while i > 0 and len(data) - i < 3 and data[i - 1] & 0xC0 == 0x80:  # continuation bytes
        i -= 1
    if i > 0:
        lead = data[i - 1]
        need = 2 if lead & 0xE0 == 0xC0 else 3 if lead & 0xF0 == 0xE0 else 4 if lead & 0xF8 == 0xF0 else 1
        if need > len(data) - (i - 1):
            return data[: i - 1].decode("utf-8", errors="replace"), data[i - 1 :]
    return data.decode("utf-8", errors="replace"), b""


def _overlap(text: str, stop: str) -> int:
    """Length of the longest suffix of ``text`` that is a proper prefix of ``stop``."""
    for n in range(min(len(text), len(stop) - 1), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0
