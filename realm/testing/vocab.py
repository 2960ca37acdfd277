"""A small but real GPT-2 style byte-level BPE vocabulary for synthetic models.

Tokens are the special tokens, the 256 byte-level characters (GPT-2's
``bytes_to_unicode`` alphabet) and merges learned from a fixed English text by a plain,
deterministic BPE trainer, so a synthetic model tokenizes ordinary text into real
multi-byte tokens, and the same arguments always give the same vocabulary.
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from dataclasses import dataclass

from gguf import TokenType

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
BOS_TOKEN, EOS_TOKEN = "<|endoftext|>", "<|im_end|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# The text the merges are learned from: common English words, so that text in tests
# splits into multi-byte tokens.
TRAINING_TEXT = """
The quick brown fox jumps over the lazy dog. The capital of France is Paris, and the
capital of Germany is Berlin. Once upon a time there was a little girl who lived in a
village near the forest. Whenever she went out, the little girl wore a red riding cloak,
so everyone in the village called her Little Red Riding Hood. Hello, world! How are you
today? I am fine, thank you. What is the answer to the question? The answer is 42.
Machine learning models turn text into tokens, tokens into numbers, and numbers into text
again. A transformer reads the whole context and predicts the next token, one at a time.
Numbers such as 1, 2, 3, 10, 100 and 2024 appear in text too. She said: "It is a
beautiful day, isn't it?" They have been working on this for years, and they will keep
working on it until it is done. There are many things that we do not know yet.
"""

# GPT-2's pre-tokenizer pattern (llama.cpp's "default" pre-tokenizer is the same idea):
# contractions, letters, digits, punctuation, each with an optional leading space.
_PRETOKENIZE = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+")


@functools.lru_cache(maxsize=1)
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (space -> 'Ġ')."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def _encode_word(word: str) -> tuple[str, ...]:
    table = byte_to_unicode()
    return tuple(table[b] for b in word.encode("utf-8"))


def train_merges(text: str, n_merges: int) -> list[tuple[str, str]]:
    """Learn up to `n_merges` BPE merges from `text`: the most frequent pair first,
    ties broken by the pair's characters, so the result is deterministic."""
    words = Counter(_encode_word(w) for w in _PRETOKENIZE.findall(text))
    merges: list[tuple[str, str]] = []
    while len(merges) < n_merges:
        pairs: Counter[tuple[str, str]] = Counter()
        for symbols, count in words.items():
            for pair in zip(symbols, symbols[1:], strict=False):  # adjacent pairs
                pairs[pair] += count
        if not pairs:
            break  # every word is a single token: nothing left to merge
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        merged: Counter[tuple[str, ...]] = Counter()
        for symbols, count in words.items():
            out, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    out.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    out.append(symbols[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return merges


@dataclass(frozen=True)
class Vocab:
    """What a GGUF stores for a gpt2-style tokenizer."""

    tokens: list[str]
    token_types: list[int]
    merges: list[str]  # "left right", in priority order
    bos_id: int
    eos_id: int

    def __len__(self) -> int:
        return len(self.tokens)


def max_merges() -> int:
    """How many merges `TRAINING_TEXT` yields before every word is one token."""
    return len(train_merges(TRAINING_TEXT, 10**6))


def gpt2_vocab(n_vocab: int | None = None) -> Vocab:
    """A byte-level BPE vocabulary of exactly `n_vocab` tokens (default: 512).

    Special tokens come first (ids 0..2, type CONTROL), then the 256 byte characters, then
    one token per merge. When `n_vocab` asks for more tokens than the training text has
    merges, the rest are ``<|unused_N|>`` tokens of type UNUSED that no text produces.
    """
    n_vocab = 512 if n_vocab is None else int(n_vocab)
    n_base = len(SPECIAL_TOKENS) + 256
    if n_vocab < n_base:
        raise ValueError(f"n_vocab must be at least {n_base} (specials + 256 bytes), got {n_vocab}")
    merges = train_merges(TRAINING_TEXT, n_vocab - n_base)
    tokens = [*SPECIAL_TOKENS, *(byte_to_unicode()[b] for b in range(256))]
    types = [TokenType.CONTROL] * len(SPECIAL_TOKENS) + [TokenType.NORMAL] * 256
    for left, right in merges:
        if left + right not in tokens:  # two merge paths can build the same string
            tokens.append(left + right)
            types.append(TokenType.NORMAL)
    n_unused = n_vocab - len(tokens)
    tokens += [f"<|unused_{i}|>" for i in range(n_unused)]
    types += [TokenType.UNUSED] * n_unused
    return Vocab(tokens, [int(t) for t in types], [f"{a} {b}" for a, b in merges],
                 tokens.index(BOS_TOKEN), tokens.index(EOS_TOKEN))
