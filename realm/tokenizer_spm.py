"""llama.cpp's SentencePiece-style merging (``llm_tokenizer_spm_session``), in Python.

Start from one symbol per character; repeatedly join the adjacent pair whose
concatenation is the vocabulary token with the highest score (the leftmost pair on a tie);
then write each symbol as its token, or a character with no token as its UTF-8 bytes'
``<0xXX>`` tokens. A Hugging Face BPE with merges ranked by score does nearly the same,
but deriving those merges for a 262144-token vocabulary costs seconds at every load and
its tie-breaking is by merge rank, not position; this needs only the token -> id table.
"""

from __future__ import annotations

from heapq import heapify, heappop, heappush

import numpy as np

from realm.errors import RealmError


class SpmEncoder:
    """Encode text (spaces already escaped as U+2581) with llama.cpp's SPM merge loop.

    >>> enc = SpmEncoder(["a", "b", "ab", "<0x63>"], np.array([0, 0, 5, 0], np.float32))
    >>> enc.encode("abc")   # "ab" is a token; "c" is not, so it falls back to its byte
    [2, 3]
    """

    def __init__(
        self, tokens: list[str], scores: np.ndarray, token_ids: dict[str, int] | None = None
    ) -> None:
        self._ids = token_ids if token_ids is not None else {t: i for i, t in enumerate(tokens)}
        # Negated so that heapq's smallest item is the best-scoring merge.
        self._neg_scores: list[float] = (-scores.astype(np.float64)).tolist()
        self._byte_ids: list[int | None] = []
        for byte in range(256):
            # llama.cpp's byte_to_token: "<0xXX>", else the byte itself as a one-byte token.
            found = self._ids.get(f"<0x{byte:02X}>")
            if found is None and byte < 0x80:
                found = self._ids.get(chr(byte))
            self._byte_ids.append(found)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, which must already have its spaces escaped."""
        ids, neg_scores = self._ids, self._neg_scores
        sym = list(text)  # symbol texts; "" once merged into the symbol on its left
        n = len(sym)
        if n == 0:
            return []
        nxt = list(range(1, n + 1))
        nxt[-1] = -1
        prv = list(range(-1, n - 1))
        heap = []
        for i in range(n - 1):
            pair = sym[i] + sym[i + 1]
            token = ids.get(pair)
            if token is not None:
                heap.append((neg_scores[token], i, i + 1, len(pair)))
        heapify(heap)
        while heap:
            _, left, right, size = heappop(heap)
            left_text, right_text = sym[left], sym[right]
            # Stale entry: one side was merged away or grew since the pair was queued.
            if not left_text or not right_text or len(left_text) + len(right_text) != size:
                continue
            merged = sym[left] = left_text + right_text
            sym[right] = ""
            after = nxt[left] = nxt[right]
            if after >= 0:
                prv[after] = left
            before = prv[left]
            if before >= 0:
                pair = sym[before] + merged
                token = ids.get(pair)
                if token is not None:
                    heappush(heap, (neg_scores[token], before, left, len(pair)))
            if after >= 0:
                pair = merged + sym[after]
                token = ids.get(pair)
                if token is not None:
                    heappush(heap, (neg_scores[token], left, after, len(pair)))
        out: list[int] = []
        i = 0
        while i >= 0:
            token = ids.get(sym[i])
            if token is not None:
                out.append(token)
            else:
                out.extend(self._byte_fallback(sym[i]))
            i = nxt[i]
        return out

    def _byte_fallback(self, char: str) -> list[int]:
        out = []
        for byte in char.encode("utf-8"):
            token = self._byte_ids[byte]
            if token is None:
                raise RealmError(
                    f"character {char!r} has no token and the vocabulary has no byte token "
                    f"<0x{byte:02X}> to spell it with"
                )
            out.append(token)
        return out
