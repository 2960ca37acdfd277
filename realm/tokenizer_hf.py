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

Deriving those merges for a 262144-token vocabulary takes a second or two, so
:class:`realm.tokenizer.Tokenizer` builds the SentencePiece-style one only when asked for
its ``hf`` attribute and tokenizes with :mod:`realm.tokenizer_spm` meanwhile.
"""

from __future__ import annotations

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from realm.errors import UnsupportedModelError
from realm.tokenizer_vocab import TokenAttr, Vocab

SPACE_ESCAPE = "\u2581"  # SentencePiece's visible space, "▁"


def build_hf(vocab: Vocab) -> tuple[Tokenizer, Tokenizer]:
    """Return ``(full, fragment)`` tokenizers for ``vocab``, sharing one BPE model.

    ``full`` is a complete Hugging Face tokenizer: control, unknown and user-defined
    tokens are added tokens, and it has a decoder. ``fragment`` has no added tokens and
    no space prefix: it encodes the text between special tokens, which
    :class:`realm.tokenizer.Tokenizer` separates itself, exactly as llama.cpp does.

    >>> full, fragment = build_hf(vocab)                      # doctest: +SKIP
    >>> full.encode("<|im_start|>user").ids                   # doctest: +SKIP
    [1, 4093]
    """
    token_ids = vocab.token_ids
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
    get = token_ids.get
    whole, left, right = [], [], []
    for index, text in enumerate(tokens):
        for cut in range(1, len(text)):
            a = get(text[:cut])
            if a is not None:
                b = get(text[cut:])
                if b is not None:
                    whole.append(index)
                    left.append(a)
                    right.append(b)
    whole_ids = np.asarray(whole, dtype=np.int64)
    # Stable sort on the score alone keeps id order, then split order, among equals.
    order = np.argsort(-scores[whole_ids].astype(np.float64), kind="stable")
    return [(tokens[left[k]], tokens[right[k]]) for k in order.tolist()]
