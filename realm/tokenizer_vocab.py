"""A GGUF vocabulary read the way llama.cpp's ``llama_vocab::load`` reads it.

This module holds the rules, not the tokenization: which ``tokenizer.ggml.*`` keys mean
what, the defaults llama.cpp falls back on, the pre-tokenizer of each
``tokenizer.ggml.pre`` name, and the text-based detection of end-of-generation and
fill-in-the-middle tokens (llama.cpp marks ``<|im_end|>``, ``<end_of_turn>``, ``</s>``...
as control tokens that end generation even when the file's ``token_type`` says otherwise).
:mod:`realm.tokenizer` turns a :class:`Vocab` into a working tokenizer.

    >>> vocab = Vocab.from_metadata(read_gguf(path, tensors_data=False).metadata)  # doctest: +SKIP
    >>> vocab.kind, vocab.pre, vocab.bos_id, sorted(vocab.eog_ids)                 # doctest: +SKIP
    ('bpe', 'smollm', 1, [0, 2, 4])
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from realm.errors import GGUFFormatError, UnsupportedModelError


class TokenAttr(enum.IntFlag):
    """llama.cpp's per-token attribute bits (``llama_token_attr``)."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5


# GGUF ``tokenizer.ggml.token_type`` values (llama_token_type) -> attribute bits.
_TOKEN_TYPE_ATTR = {
    0: TokenAttr.UNDEFINED,
    1: TokenAttr.NORMAL,
    2: TokenAttr.UNKNOWN,
    3: TokenAttr.CONTROL,
    4: TokenAttr.USER_DEFINED,
    5: TokenAttr.UNUSED,
    6: TokenAttr.BYTE,
}

# Pre-tokenizer regexes, copied from llama.cpp's llm_tokenizer_bpe (src/llama-vocab.cpp).
# Each list is applied in order, every regex splitting the pieces the previous one left,
# with the unmatched stretches kept as pieces of their own.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
REGEX_FAMILIES: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "gpt2": (_GPT2,),
    "llama3": (_LLAMA3,),
    "smollm": (r"\p{N}", _GPT2),
    "qwen2": (_QWEN2,),
}


@dataclass(frozen=True)
class PreTokenizer:
    """What one ``tokenizer.ggml.pre`` name selects in llama.cpp."""

    family: str  # key of REGEX_FAMILIES
    clean_spaces: bool = True  # detokenize drops " ," " ." etc. (llama.cpp's clean_spaces)
    ignore_merges: bool = False  # a whole pre-token found in the vocab is one token
    add_bos: bool = False  # llama.cpp's default when the file has no add_bos_token key


_LLAMA3_PRE = PreTokenizer("llama3", ignore_merges=True, add_bos=True)
_SMOLLM_PRE = PreTokenizer("smollm")
_QWEN2_PRE = PreTokenizer("qwen2", clean_spaces=False)
# The names llama.cpp gives each behaviour; a name missing here is refused, never guessed.
PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    "default": PreTokenizer("default"),
    "gpt-2": PreTokenizer("gpt2"),
    "phi-2": PreTokenizer("gpt2"),
    "mpt": PreTokenizer("gpt2"),
    "olmo": PreTokenizer("gpt2"),
    "llama3": _LLAMA3_PRE,
    "llama-v3": _LLAMA3_PRE,
    "llama-bpe": _LLAMA3_PRE,
    "falcon3": _LLAMA3_PRE,
    "dbrx": PreTokenizer("llama3"),
    "smaug-bpe": PreTokenizer("llama3"),
    "smollm": PreTokenizer("smollm", clean_spaces=False),
    "starcoder": _SMOLLM_PRE,
    "refact": _SMOLLM_PRE,
    "codeshell": _SMOLLM_PRE,
    "command-r": PreTokenizer("smollm", clean_spaces=False),
    "qwen2": _QWEN2_PRE,
    "deepseek-r1-qwen": _QWEN2_PRE,
    "stablelm2": PreTokenizer("qwen2"),
    "megrez": PreTokenizer("qwen2"),
}

MODEL_KINDS = {"gpt2": "bpe", "llama": "spm"}

# Token texts llama.cpp recognises when the file names no id (llama_vocab::impl::load).
EOT_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
    "<|end_of_text|>", "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
})  # fmt: skip
EOM_TEXTS = frozenset({"<|eom_id|>"})
FIM_TEXTS = {
    "fim_pre": frozenset({
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
        "<|code_prefix|>", "<|prefix|>",
    }),
    "fim_suf": frozenset({
        "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
        "<|code_suffix|>", "<|suffix|>",
    }),
    "fim_mid": frozenset({
        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
        "<|code_middle|>", "<|middle|>",
    }),
    "fim_pad": frozenset({"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"}),
    "fim_rep": frozenset({
        "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>",
    }),
    "fim_sep": frozenset({"<|file_sep|>"}),
}  # fmt: skip
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~[",
})  # fmt: skip
# gpt-oss renders these although they are control tokens; llama.cpp makes them user-defined.
_ALWAYS_RENDERED = frozenset({"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"})

# Special-token id keys, in llama.cpp's order: a deprecated key read later wins.
_ID_KEYS = (
    ("bos", "bos_token_id"), ("eos", "eos_token_id"), ("eot", "eot_token_id"),
    ("eom", "eom_token_id"), ("unk", "unknown_token_id"),
    ("fim_pre", "fim_pre_token_id"), ("fim_suf", "fim_suf_token_id"),
    ("fim_mid", "fim_mid_token_id"), ("fim_pad", "fim_pad_token_id"),
    ("fim_rep", "fim_rep_token_id"), ("fim_sep", "fim_sep_token_id"),
    ("fim_pre", "prefix_token_id"), ("fim_suf", "suffix_token_id"),
    ("fim_mid", "middle_token_id"),
)  # fmt: skip
# llama.cpp's defaults before the file is read: SPM assumes LLaMA's ids, BPE assumes 11.
_DEFAULT_IDS = {"spm": {"bos": 1, "eos": 2, "unk": 0}, "bpe": {"bos": 11, "eos": 11}}


@dataclass
class Vocab:
    """Everything realm needs from a GGUF's ``tokenizer.ggml.*`` keys, llama.cpp-resolved.

    ``attrs[i]`` holds token ``i``'s :class:`TokenAttr` bits after llama.cpp's
    text-based fixes; ``ids`` maps ``bos``, ``eos``, ``eot``, ``eom``, ``unk`` and the
    ``fim_*`` roles to a token id or ``None``; ``eog_ids`` is every id that ends
    generation.
    """

    kind: str  # "bpe" (tokenizer.ggml.model = gpt2) or "spm" (= llama)
    pre: str | None  # tokenizer.ggml.pre as resolved ("default" when absent); None for spm
    tokens: list[str]
    token_ids: dict[str, int]  # text -> id
    attrs: np.ndarray  # int32 TokenAttr bits per token
    scores: np.ndarray | None  # float32 per token (spm merge priorities)
    merges: list[tuple[str, str]] | None  # bpe merges in rank order
    ids: dict[str, int | None]
    eog_ids: frozenset[int]
    add_bos: bool
    add_eos: bool
    add_space_prefix: bool
    clean_spaces: bool
    ignore_merges: bool
    regexes: tuple[str, ...]

    @property
    def bos_id(self) -> int | None:
        return self.ids["bos"]

    @property
    def eos_id(self) -> int | None:
        return self.ids["eos"]

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str = "metadata") -> Vocab:
        """Read and check the tokenizer keys of a GGUF ``metadata`` dict.

        ``source`` (usually the file path) prefixes every error message. Raises
        :class:`UnsupportedModelError` for a tokenizer model or pre-tokenizer realm does
        not implement and :class:`GGUFFormatError` for missing or inconsistent keys.
        """
        model = _get(metadata, "tokenizer.ggml.model", str, source)
        if model is None:
            raise GGUFFormatError(f"{source}: no 'tokenizer.ggml.model' key; the file has no vocabulary")
        kind = MODEL_KINDS.get(model)
        if kind is None:
            raise UnsupportedModelError(
                f"{source}: tokenizer.ggml.model = {model!r} is not supported; realm reads "
                f"{', '.join(repr(k) for k in MODEL_KINDS)}"
            )
        tokens, token_ids = _tokens(metadata, source)
        n_tokens = len(tokens)
        attrs = _attrs(metadata, n_tokens, source)
        pre_name: str | None = None
        pre = PreTokenizer("default", clean_spaces=False)
        if kind == "bpe":
            # llama.cpp uses "default" when the key is missing (with a loud warning).
            pre_name = _get(metadata, "tokenizer.ggml.pre", str, source) or "default"
            if pre_name not in PRE_TOKENIZERS:
                raise UnsupportedModelError(
                    f"{source}: tokenizer.ggml.pre = {pre_name!r} is not supported; realm knows "
                    f"{', '.join(repr(name) for name in PRE_TOKENIZERS)}"
                )
            pre = PRE_TOKENIZERS[pre_name]
        scores = _scores(metadata, n_tokens, source) if kind == "spm" else None
        merges = _merges(metadata, source) if kind == "bpe" else None

        add_bos = _get(metadata, "tokenizer.ggml.add_bos_token", bool, source)
        add_eos = _get(metadata, "tokenizer.ggml.add_eos_token", bool, source)
        add_space_prefix = _get(metadata, "tokenizer.ggml.add_space_prefix", bool, source)
        if add_bos is None:
            add_bos = pre.add_bos if kind == "bpe" else True
        if add_eos is None:
            add_eos = False
        if add_space_prefix is None:
            add_space_prefix = kind == "spm"

        ids = _special_ids(metadata, kind, n_tokens, source)
        eog_ids = _detect_by_text(tokens, attrs, ids)
        for flag, role, key in ((add_bos, "bos", "add_bos_token"), (add_eos, "eos", "add_eos_token")):
            if flag and ids[role] is None:
                raise GGUFFormatError(
                    f"{source}: tokenizer.ggml.{key} is true but the file gives no "
                    f"tokenizer.ggml.{role}_token_id"
                )
        return cls(
            kind=kind, pre=pre_name, tokens=tokens, token_ids=token_ids, attrs=attrs,
            scores=scores, merges=merges, ids=ids, eog_ids=eog_ids, add_bos=add_bos, add_eos=add_eos,
            add_space_prefix=add_space_prefix,
            clean_spaces=pre.clean_spaces if kind == "bpe" else False,
            ignore_merges=pre.ignore_merges, regexes=REGEX_FAMILIES[pre.family],
        )  # fmt: skip


def _get(metadata: Mapping[str, Any], key: str, kind: type, source: str) -> Any:
    value = metadata.get(key)
    if value is None:
        return None
    # bool is an int in Python: keep a stored bool out of id keys and the reverse.
    ok = isinstance(value, kind) and (kind is not int or not isinstance(value, bool))
    if not ok:
        raise GGUFFormatError(
            f"{source}: key {key!r} must be of type {kind.__name__}, found {type(value).__name__} "
            f"{value!r}"
        )
    return value


def _tokens(metadata: Mapping[str, Any], source: str) -> tuple[list[str], dict[str, int]]:
    """The token list (empty entries renamed as llama.cpp does) and its text -> id map."""
    tokens = metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not set(map(type, tokens)) <= {str}:
        raise GGUFFormatError(
            f"{source}: key 'tokenizer.ggml.tokens' must be an array of strings, found "
            f"{type(tokens).__name__}"
        )
    if not tokens:
        raise GGUFFormatError(f"{source}: key 'tokenizer.ggml.tokens' is empty")
    tokens = list(tokens)
    token_ids = {text: index for index, text in enumerate(tokens)}
    if "" in token_ids:
        for index, text in enumerate(tokens):
            if not text:
                # llama.cpp renames empty tokens so that they never match; so do we, loudly.
                warnings.warn(f"{source}: token {index} is empty; named [EMPTY_{index}]", stacklevel=4)
                tokens[index] = f"[EMPTY_{index}]"
        token_ids = {text: index for index, text in enumerate(tokens)}
    if len(token_ids) != len(tokens):
        first: dict[str, int] = {}
        for index, text in enumerate(tokens):
            if first.setdefault(text, index) != index:
                raise GGUFFormatError(
                    f"{source}: duplicate token in tokenizer.ggml.tokens: {text!r} has ids "
                    f"{first[text]} and {index}"
                )
    return tokens, token_ids


def _numeric_array(metadata: Mapping[str, Any], key: str, n: int, kinds: str, source: str):
    value = metadata.get(key)
    if value is None:
        return None
    if not isinstance(value, np.ndarray) or value.ndim != 1 or value.dtype.kind not in kinds:
        found = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise GGUFFormatError(f"{source}: key {key!r} must be a numeric array, found {found}")
    if len(value) != n:
        raise GGUFFormatError(f"{source}: key {key!r} has {len(value)} entries, expected {n} (one per token)")
    return value


def _attrs(metadata: Mapping[str, Any], n: int, source: str) -> np.ndarray:
    types = _numeric_array(metadata, "tokenizer.ggml.token_type", n, "iu", source)
    if types is None:
        return np.full(n, int(TokenAttr.NORMAL), dtype=np.int32)
    bad = np.flatnonzero((types < 0) | (types > 6))
    if bad.size:
        raise GGUFFormatError(
            f"{source}: tokenizer.ggml.token_type[{int(bad[0])}] = {int(types[bad[0]])}, expected 0..6"
        )
    table = np.array([int(_TOKEN_TYPE_ATTR[t]) for t in range(7)], dtype=np.int32)
    return table[types.astype(np.int64)]


def _scores(metadata: Mapping[str, Any], n: int, source: str) -> np.ndarray:
    scores = _numeric_array(metadata, "tokenizer.ggml.scores", n, "iuf", source)
    if scores is None:
        # llama.cpp would give every token score 0 and merge by position alone.
        raise GGUFFormatError(
            f"{source}: a SentencePiece-style vocabulary (tokenizer.ggml.model = 'llama') "
            f"needs tokenizer.ggml.scores"
        )
    return scores.astype(np.float32)


def _merges(metadata: Mapping[str, Any], source: str) -> list[tuple[str, str]]:
    merges = metadata.get("tokenizer.ggml.merges")
    if not isinstance(merges, list):
        raise GGUFFormatError(
            f"{source}: a BPE vocabulary (tokenizer.ggml.model = 'gpt2') needs "
            f"tokenizer.ggml.merges as an array of strings"
        )
    pairs: list[tuple[str, str]] = []
    for index, merge in enumerate(merges):
        # llama.cpp splits at the first space after the first character.
        cut = merge.find(" ", 1) if isinstance(merge, str) else -1
        if cut < 0:
            raise GGUFFormatError(
                f"{source}: tokenizer.ggml.merges[{index}] = {merge!r} is not two tokens separated by a space"
            )
        pairs.append((merge[:cut], merge[cut + 1 :]))
    return pairs


def _special_ids(metadata: Mapping[str, Any], kind: str, n: int, source: str) -> dict[str, int | None]:
    ids: dict[str, int | None] = dict.fromkeys(("bos", "eos", "eot", "eom", "unk", *FIM_TEXTS), None)
    for role, default in _DEFAULT_IDS[kind].items():
        ids[role] = default if default < n else None
    for role, key in _ID_KEYS:
        value = _get(metadata, f"tokenizer.ggml.{key}", int, source)
        if value is None:
            continue
        if not 0 <= value < n:
            raise GGUFFormatError(
                f"{source}: tokenizer.ggml.{key} = {value} is outside the vocabulary (0..{n - 1})"
            )
        ids[role] = value
    return ids


def _detect_by_text(tokens: list[str], attrs: np.ndarray, ids: dict[str, int | None]) -> frozenset[int]:
    """Apply llama.cpp's text-based fixes to ``attrs``/``ids``; return the EOG id set.

    llama.cpp walks an unordered map here; where several tokens match one role the first
    in id order wins (llama.cpp's pick among them is unspecified).
    """
    control = int(TokenAttr.CONTROL)
    detect = {"eot": EOT_TEXTS, "eom": EOM_TEXTS, **FIM_TEXTS}
    wanted = {role: texts for role, texts in detect.items() if ids[role] is None}
    all_texts = frozenset().union(*wanted.values(), EOG_TEXTS, _ALWAYS_RENDERED)
    found = [(i, t) for i, t in enumerate(tokens) if t in all_texts]
    for index, text in found:
        for role, texts in wanted.items():
            if ids[role] is None and text in texts:
                ids[role] = index
                attrs[index] |= control
    eog = {ids[role] for role in ("fim_pad", "fim_rep", "fim_sep") if ids[role] is not None}
    for index, text in found:
        if text in EOG_TEXTS:
            eog.add(index)
            attrs[index] |= control
        if text in _ALWAYS_RENDERED:
            attrs[index] = int(TokenAttr.USER_DEFINED)
    eog.update(ids[role] for role in ("eos", "eot", "eom") if ids[role] is not None)
    texts = {tokens[i]: i for i in eog}
    # o200k_harmony / solar-open: "<|end|>" only ends a message there, not generation.
    if "<|end|>" in texts and (
        {"<|return|>", "<|call|>"} <= texts.keys() or {"<|calls|>", "<|flush|>"} <= texts.keys()
    ):
        eog.discard(texts["<|end|>"])
        attrs[texts["<|end|>"]] = int(TokenAttr.USER_DEFINED)
    # gemma 4 / paddleocr: "</s>" is ordinary text when "<|tool_response>" exists.
    if "<|tool_response>" in texts and "</s>" in texts:
        eog.discard(texts["</s>"])
        attrs[texts["</s>"]] = int(TokenAttr.NORMAL)
    return frozenset(eog)
