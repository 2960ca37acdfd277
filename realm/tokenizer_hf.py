"""Build ``tokenizers`` (Hugging Face) objects that tokenize a :class:`Vocab` as llama.cpp does.

Both GGUF tokenizer kinds become a ``tokenizers.models.BPE``:

- ``gpt2`` (byte-level BPE): the file's merges in rank order, the pre-tokenizer regexes of
  its ``tokenizer.ggml.pre`` as ``Split`` steps, then GPT-2's byte-to-unicode mapping.
  llama.cpp merges the lowest-ranked adjacent pair first, leftmost on ties: so does BPE.
- ``llama`` (SentencePiece-style, scores and byte fallback): llama.cpp merges the adjacent
  pair whose concatenation is the vocabulary token of highest score. That is BPE with one
  merge ``(a, b)`` for every token ``a + b`` whose two halves are tokens too, ranked by
  the score of ``a + b``; characters with no token fall back to ``<0xXX>`` byte tokens.
  Spaces become U+2581 first, and the whole fragment is one word (no pre-splitting).

Deriving those merges for a 262144-token vocabulary is the costly step of loading a
tokenizer, so it is vectorised: every token's prefixes and suffixes are hashed with numpy
and looked up among all tokens' hashes, and each hit is then checked character by
character, so a hash collision can cost time but never a wrong merge.
"""

from __future__ import annotations

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from realm.errors import UnsupportedModelError
from realm.tokenizer_vocab import TokenAttr, Vocab

SPACE_ESCAPE = "\u2581"  # SentencePiece's visible space, "▁"

# Tokens up to this many characters go through the vectorised merge search; longer ones
# (rare: padding runs, long user-defined tokens) through a plain loop.
_VECTOR_MAX_CHARS = 48
# Candidates checked per numpy batch: bounds the gather matrix to a few tens of MB.
_CHECK_BATCH = 1 << 16
_HASH_BASE = np.uint64(0x100000001B3)  # FNV-1a's 64-bit prime; any odd constant works
_HASH_LENGTH_SALT = np.uint64(0x9E3779B97F4A7C15)


def build_hf(vocab: Vocab) -> tuple[Tokenizer, Tokenizer]:
    """Return ``(full, fragment)`` tokenizers for ``vocab``, sharing one BPE model.

    ``full`` is a complete Hugging Face tokenizer: control, unknown and user-defined
    tokens are added tokens, and it has a decoder. ``fragment`` has no added tokens and
    no space prefix: it encodes the text between special tokens, which
    :class:`realm.tokenizer.Tokenizer` separates itself, exactly as llama.cpp does.
    """
    token_ids = {text: index for index, text in enumerate(vocab.tokens)}
    if vocab.kind == "bpe":
        model = models.BPE(
            vocab=token_ids,
            merges=_checked_bpe_merges(vocab, token_ids),
            ignore_merges=vocab.ignore_merges,
        )
        pre = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in vocab.regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)]
        )
        fragment, full = Tokenizer(model), Tokenizer(model)
        for tok in (fragment, full):
            tok.pre_tokenizer = pre
        full.decoder = decoders.ByteLevel()
    else:
        merges = spm_merges(vocab.tokens, vocab.scores, token_ids)
        model = models.BPE(vocab=token_ids, merges=merges, byte_fallback=True)
        fragment, full = Tokenizer(model), Tokenizer(model)
        escape = normalizers.Replace(" ", SPACE_ESCAPE)
        fragment.normalizer = escape
        steps = [decoders.Replace(SPACE_ESCAPE, " "), decoders.ByteFallback(), decoders.Fuse()]
        if vocab.add_space_prefix:
            # HF normalizes each stretch between added tokens on its own: prepending there
            # is llama.cpp's "space before the text after a special token".
            full.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE_ESCAPE), escape])
            steps.append(decoders.Strip(" ", 1, 0))
        else:
            full.normalizer = escape
        full.decoder = decoders.Sequence(steps)
    _add_special_tokens(full, vocab)
    return full, fragment


def _add_special_tokens(tok: Tokenizer, vocab: Vocab) -> None:
    special = int(TokenAttr.CONTROL | TokenAttr.UNKNOWN)
    user = int(TokenAttr.USER_DEFINED)
    specials, users = [], []
    for index in np.flatnonzero(vocab.attrs & (special | user)).tolist():
        text = vocab.tokens[index]
        if vocab.attrs[index] & special:
            specials.append(AddedToken(text, special=True, normalized=False))
        else:
            users.append(AddedToken(text, special=False, normalized=False))
    tok.add_special_tokens(specials)
    tok.add_tokens(users)


def _checked_bpe_merges(vocab: Vocab, token_ids: dict[str, int]) -> list[tuple[str, str]]:
    """The file's merges, first occurrence kept (llama.cpp's ``emplace``), all in the vocab."""
    assert vocab.merges is not None
    seen: set[tuple[str, str]] = set()
    merges = []
    for rank, (left, right) in enumerate(vocab.merges):
        if (left, right) in seen:
            continue
        seen.add((left, right))
        for part in (left, right, left + right):
            if part not in token_ids:
                # llama.cpp would merge into a non-token and then spell it out byte by byte;
                # a Hugging Face BPE cannot hold such a merge.
                raise UnsupportedModelError(
                    f"tokenizer.ggml.merges[{rank}] = {left + ' ' + right!r}: {part!r} is not "
                    f"in tokenizer.ggml.tokens; realm needs every merge to make a vocabulary token"
                )
        merges.append((left, right))
    return merges


def spm_merges(
    tokens: list[str], scores: np.ndarray, token_ids: dict[str, int] | None = None
) -> list[tuple[str, str]]:
    """Every ``(a, b)`` with ``a``, ``b`` and ``a + b`` all tokens, best ``a + b`` score first.

    Ties between equal scores go to the lower id of ``a + b``, then the shorter ``a``.

    >>> spm_merges(["a", "b", "ab", "c", "abc"], np.array([0, 0, -1, 0, -2], np.float32))
    [('a', 'b'), ('ab', 'c')]
    """
    if token_ids is None:
        token_ids = {text: index for index, text in enumerate(tokens)}
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    short = np.flatnonzero(lengths <= _VECTOR_MAX_CHARS)
    found = _vector_splits(tokens, lengths, short)
    if found is None:  # two distinct tokens hashed alike: take the exact slow path
        short = short[:0]
    loop_rows = np.setdiff1d(np.arange(len(tokens)), short, assume_unique=True)
    looped = _loop_splits(tokens, loop_rows, token_ids)
    parts = [looped] if found is None else [found, looped]
    whole, split_at, left, right = (np.concatenate(cols) for cols in zip(*parts))
    order = np.lexsort((split_at, whole, -scores[whole].astype(np.float64)))
    return [(tokens[a], tokens[b]) for a, b in zip(left[order].tolist(), right[order].tolist())]


def _loop_splits(tokens: list[str], rows: np.ndarray, token_ids: dict[str, int]):
    whole, split_at, left, right = [], [], [], []
    for row in rows.tolist():
        text = tokens[row]
        for cut in range(1, len(text)):
            a = token_ids.get(text[:cut])
            if a is None:
                continue
            b = token_ids.get(text[cut:])
            if b is not None:
                whole.append(row)
                split_at.append(cut)
                left.append(a)
                right.append(b)
    return tuple(np.asarray(col, dtype=np.int64) for col in (whole, split_at, left, right))


def _vector_splits(tokens: list[str], lengths: np.ndarray, rows: np.ndarray):
    """Splits of the tokens ``rows`` (all short) into two tokens; None on a hash clash."""
    if rows.size == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty, empty
    width = int(lengths[rows].max())
    chars = np.array([tokens[r] for r in rows.tolist()], dtype=f"<U{width}")
    chars = chars.view(np.uint32).reshape(len(rows), width)
    row_len = lengths[rows]
    # prefix[:, k] hashes the first k characters (Horner's rule, wrapping mod 2**64).
    prefix = np.zeros((len(rows), width + 1), dtype=np.uint64)
    for k in range(width):
        prefix[:, k + 1] = prefix[:, k] * _HASH_BASE + chars[:, k].astype(np.uint64)
    powers = np.ones(width + 1, dtype=np.uint64)
    for k in range(width):
        powers[k + 1] = powers[k] * _HASH_BASE
    local = np.arange(len(rows))
    full = prefix[local, row_len]

    def keyed(hashes: np.ndarray, length: np.ndarray) -> np.ndarray:
        return hashes + length.astype(np.uint64) * _HASH_LENGTH_SALT

    token_keys = keyed(full, row_len)
    by_key = np.argsort(token_keys, kind="stable")
    sorted_keys = token_keys[by_key]
    if np.any(sorted_keys[1:] == sorted_keys[:-1]):
        return None

    def lookup(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
        return sorted_keys[pos] == keys, by_key[pos]

    cut_grid = np.arange(1, width)
    row_idx, col = np.nonzero(cut_grid[None, :] < row_len[:, None])
    cut = col + 1
    rest = row_len[row_idx] - cut
    hit_a, left = lookup(keyed(prefix[row_idx, cut], cut))
    keep = hit_a
    row_idx, cut, rest, left = row_idx[keep], cut[keep], rest[keep], left[keep]
    suffix = full[row_idx] - prefix[row_idx, cut] * powers[rest]
    hit_b, right = lookup(keyed(suffix, rest))
    row_idx, cut, rest, left, right = (x[hit_b] for x in (row_idx, cut, rest, left, right))
    exact = _check_splits(chars, row_len, row_idx, cut, left, right)
    row_idx, cut, left, right = (x[exact] for x in (row_idx, cut, left, right))
    return rows[row_idx], cut, rows[left], rows[right]


def _check_splits(chars, row_len, row_idx, cut, left, right) -> np.ndarray:
    """True where ``left + right`` really spells the token (rules out hash collisions)."""
    width = chars.shape[1]
    columns = np.arange(width)
    ok = np.empty(len(row_idx), dtype=bool)
    for start in range(0, len(row_idx), _CHECK_BATCH):
        s = slice(start, start + _CHECK_BATCH)
        r, c, a, b = row_idx[s], cut[s], left[s], right[s]
        good = (row_len[a] == c) & (row_len[b] == row_len[r] - c)
        in_left = columns[None, :] < c[:, None]
        good &= np.all((chars[a] == chars[r]) | ~in_left, axis=1)
        shifted = np.minimum(c[:, None] + columns[None, :], width - 1)
        in_right = columns[None, :] < (row_len[r] - c)[:, None]
        good &= np.all((chars[b] == chars[r[:, None], shifted]) | ~in_right, axis=1)
        ok[s] = good
    return ok
