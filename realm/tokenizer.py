"""The tokenizer of a GGUF model, giving llama.cpp's token ids for the same text.

    >>> tok = Tokenizer.from_gguf("SmolLM2-135M-Instruct.Q4_1.gguf")   # doctest: +SKIP
    >>> tok.tokenize("<|im_start|>user", special=True)                 # doctest: +SKIP
    [1, 4093]
    >>> tok.detokenize([19556, 905])                                   # doctest: +SKIP
    'Hello world'

Tokenizing follows ``llama_vocab::impl::tokenize``: first the text is cut around special
tokens (user-defined tokens always; control tokens only with ``special=True``), longest
token first; then each remaining stretch is encoded: for a ``gpt2`` (byte-level BPE)
vocabulary by a Hugging Face ``tokenizers`` BPE built by :mod:`realm.tokenizer_hf`, for a
``llama`` (SentencePiece-style) one by :mod:`realm.tokenizer_spm`, llama.cpp's merge loop,
which needs no merge table (the equivalent Hugging Face tokenizer, ``Tokenizer.hf``, is
built on first use: for a 262144-token vocabulary that takes a second or two).
Detokenizing follows ``llama_detokenize``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import tokenizers

from realm.arguments import check_bool, check_text, check_token_ids, is_int
from realm.errors import InvalidParameterError, RealmError
from realm.tokenizer_hf import SPACE_ESCAPE, build_hf
from realm.tokenizer_spm import SpmEncoder
from realm.tokenizer_vocab import TokenAttr, Vocab

_SHOWN_AS_SPECIAL = int(TokenAttr.CONTROL | TokenAttr.UNKNOWN)
_SPLIT_ALWAYS = int(TokenAttr.USER_DEFINED)


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character of each byte, reversed (char -> byte)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_GPT2_BYTES = _byte_decoder()


class Tokenizer:
    """Text to token ids and back, exactly as llama.cpp does it for the same GGUF file.

    Attributes: ``n_vocab``; ``bos_id`` and ``eos_id`` (``None`` when the model has none);
    ``eot_ids``, every id that ends generation (eos, eot, eom and the control tokens
    llama.cpp recognises such as ``<|im_end|>`` or ``<end_of_turn>``); ``add_bos`` and
    ``add_eos``, what the model asks to add around a prompt; ``hf``, the vocabulary as a
    ``tokenizers.Tokenizer``; ``vocab``, the resolved :class:`~realm.tokenizer_vocab.Vocab`.

    ``hf.encode(text)`` is the Hugging Face view of the same vocabulary (control tokens in
    the text are parsed, BOS is not added). Where special tokens overlap it may cut the
    text differently from llama.cpp; :meth:`tokenize` never does.
    """

    def __init__(self, vocab: Vocab) -> None:
        self.vocab = vocab
        self.n_vocab = len(vocab.tokens)
        self.bos_id = vocab.bos_id
        self.eos_id = vocab.eos_id
        self.eot_ids: set[int] = set(vocab.eog_ids)
        self.add_bos = vocab.add_bos
        self.add_eos = vocab.add_eos
        self._hf: tokenizers.Tokenizer | None = None
        if vocab.kind == "bpe":
            self._hf, fragment_tok = build_hf(vocab)
            self._encode_fragment = lambda text: fragment_tok.encode(text, add_special_tokens=False).ids
        else:
            spm = SpmEncoder(vocab.tokens, vocab.scores, vocab.token_ids)
            self._encode_fragment = lambda text: spm.encode(text.replace(" ", SPACE_ESCAPE))
        attrs = vocab.attrs

        # llama.cpp tries special tokens longest first (ties here: lower id first).
        def by_length(mask: np.ndarray) -> list[tuple[str, int]]:
            ids = np.flatnonzero(mask).tolist()
            ids.sort(key=lambda i: -len(vocab.tokens[i]))
            return [(vocab.tokens[i], i) for i in ids]

        # A user-defined token that llama.cpp made a control token ("</s>" in gemma 3)
        # is parsed only with special=True.
        self._split_plain = by_length(((attrs & _SPLIT_ALWAYS) != 0) & ((attrs & _SHOWN_AS_SPECIAL) == 0))
        self._split_special = by_length((attrs & (_SPLIT_ALWAYS | _SHOWN_AS_SPECIAL)) != 0)
        self._pieces: dict[int, bytes] = {}

    @classmethod
    def from_gguf(cls, path: str | os.PathLike[str]) -> Tokenizer:
        """The tokenizer of the GGUF file at ``path``; reads its metadata, not its weights."""
        from realm.gguf import read_gguf

        gguf = read_gguf(path, tensors_data=False)
        return cls(Vocab.from_metadata(gguf.metadata, source=str(path)))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], source: str = "metadata") -> Tokenizer:
        """The tokenizer described by a GGUF metadata dict (as ``read_gguf`` returns it)."""
        return cls(Vocab.from_metadata(metadata, source=source))

    @property
    def hf(self) -> tokenizers.Tokenizer:
        """The vocabulary as a Hugging Face ``tokenizers.Tokenizer`` (built on first use)."""
        if self._hf is None:
            self._hf = build_hf(self.vocab)[0]
        return self._hf

    def __repr__(self) -> str:
        return (
            f"Tokenizer({self.vocab.kind}, pre={self.vocab.pre!r}, n_vocab={self.n_vocab}, "
            f"bos={self.bos_id}, eos={self.eos_id}, add_bos={self.add_bos})"
        )

    # -- text -> ids ---------------------------------------------------------------

    def tokenize(
        self,
        text: str,
        add_bos: bool | None = None,
        special: bool = False,
        add_eos: bool | None = None,
    ) -> list[int]:
        """Token ids of ``text``.

        ``add_bos``/``add_eos``: prepend BOS / append EOS; ``None`` means what the model's
        metadata asks (``tokenizer.ggml.add_bos_token``, or llama.cpp's default for the
        tokenizer kind). llama.cpp's ``add_special=False`` is ``add_bos=False,
        add_eos=False``. ``special=True`` turns control-token texts such as
        ``<|im_start|>`` into their ids; otherwise they are tokenized as plain text.
        """
        check_text("text", text)
        add_bos = check_bool("add_bos", add_bos, allow_none=True)
        add_eos = check_bool("add_eos", add_eos, allow_none=True)
        special = check_bool("special", special)
        bos = self.add_bos if add_bos is None else add_bos
        eos = self.add_eos if add_eos is None else add_eos
        ids: list[int] = []
        if bos:
            ids.append(self._required_id("bos"))
        prev_special = True  # llama.cpp's SPM space prefix also goes before the first text
        space_prefix = self.vocab.kind == "spm" and self.vocab.add_space_prefix
        for fragment in self._partition(text, special):
            if isinstance(fragment, int):
                ids.append(fragment)
                prev_special = True
                continue
            if space_prefix and prev_special:
                fragment = " " + fragment
            ids.extend(self._encode_fragment(fragment))
            prev_special = False
        if eos:
            ids.append(self._required_id("eos"))
        return ids

    def _required_id(self, role: str) -> int:
        token_id = self.vocab.ids[role]
        if token_id is None:
            raise RealmError(f"this model has no {role.upper()} token (tokenizer.ggml.{role}_token_id)")
        return token_id

    def _partition(self, text: str, special: bool) -> list[str | int]:
        """Cut ``text`` around special tokens the way ``tokenizer_st_partition`` does."""
        fragments: list[str | int] = [text] if text else []
        for token_text, token_id in self._split_special if special else self._split_plain:
            if token_text not in text:
                continue
            cut: list[str | int] = []
            for fragment in fragments:
                if isinstance(fragment, int) or token_text not in fragment:
                    cut.append(fragment)
                    continue
                for k, piece in enumerate(fragment.split(token_text)):
                    if k:
                        cut.append(token_id)
                    if piece:
                        cut.append(piece)
            fragments = cut
        return fragments

    # -- ids -> text ---------------------------------------------------------------

    def token_text(self, token_id: int) -> str:
        """The vocabulary entry of ``token_id`` as stored in the file (``"<bos>"``, ``"Ġthe"``)."""
        return self.vocab.tokens[self._checked_id(token_id)]

    def _checked_id(self, token_id: int) -> int:
        if not is_int(token_id) or not 0 <= token_id < self.n_vocab:
            raise InvalidParameterError(
                f"token id {token_id!r} is not an integer in the vocabulary [0, {self.n_vocab})"
            )
        return int(token_id)

    def token_to_bytes(self, token_id: int, special: bool = True) -> bytes:
        """The bytes token ``token_id`` stands for (llama.cpp's ``token_to_piece``).

        A piece may be part of a UTF-8 character: stream by joining bytes, not strings.
        With ``special=False`` control and unknown tokens give ``b""``.
        """
        token_id = self._checked_id(token_id)
        attr = int(self.vocab.attrs[token_id])
        if not special and attr & _SHOWN_AS_SPECIAL:
            return b""
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = self._pieces[token_id] = self._piece(token_id, attr)
        return piece

    def _piece(self, token_id: int, attr: int) -> bytes:
        text = self.vocab.tokens[token_id]
        if attr & (_SHOWN_AS_SPECIAL | _SPLIT_ALWAYS):
            return text.encode("utf-8")
        if attr & TokenAttr.NORMAL:
            if self.vocab.kind == "spm":
                return text.replace(SPACE_ESCAPE, " ").encode("utf-8")
            return _gpt2_text_to_bytes(text)
        if attr & TokenAttr.BYTE:
            return bytes([int(text[3:5], 16)])
        return b""  # unused and undefined tokens print nothing in llama.cpp

    def detokenize(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """The text of ``ids`` (``llama_detokenize``); invalid UTF-8 becomes U+FFFD.

        ``skip_special=True`` drops control tokens and a leading BOS / trailing EOS that
        the model adds; otherwise control tokens are written out as their text.
        """
        return self.detokenize_bytes(ids, skip_special).decode("utf-8", errors="replace")

    def detokenize_bytes(self, ids: Iterable[int], skip_special: bool = False) -> bytes:
        """Like :meth:`detokenize`, but the raw bytes, possibly ending inside a character."""
        if isinstance(ids, Iterable) and not isinstance(ids, (Sequence, np.ndarray, str, bytes)):
            ids = list(ids)  # a generator of ids
        ids = check_token_ids("ids", ids, self.n_vocab, allow_empty=True)
        remove_space = self.vocab.add_space_prefix
        if skip_special and self.add_bos and ids and ids[0] == self.bos_id:
            remove_space = False
            ids = ids[1:]
        if skip_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        pieces = []
        for token_id in ids:
            piece = self.token_to_bytes(token_id, special=not skip_special)
            if remove_space and piece.startswith(b" "):
                piece = piece[1:]
            remove_space = False
            pieces.append(piece)
        data = b"".join(pieces)
        return _clean_spaces(data) if self.vocab.clean_spaces else data


def _gpt2_text_to_bytes(text: str) -> bytes:
    try:
        return bytes(_GPT2_BYTES[c] for c in text)
    except KeyError:
        # llama.cpp's llama_decode_text spells out a character outside GPT-2's byte map.
        out = bytearray()
        for c in text:
            if c in _GPT2_BYTES:
                out.append(_GPT2_BYTES[c])
            else:
                out += f"[UNK_BYTE_0x{c.encode('utf-8').hex()}{text}]".encode()
        return bytes(out)


def _clean_spaces(data: bytes) -> bytes:
    """llama.cpp's ``clean_spaces`` pass: " ," -> ",", " ' " -> "'", " 's" -> "'s" etc."""
    out = bytearray()
    for i, c in enumerate(data):  # drop the space before ? ! . ,
        if i and data[i - 1] == 0x20 and c in b"?!.," and out:
            out.pop()
        out.append(c)
    text, out, i = bytearray(out), bytearray(), 0
    while i < len(text):  # " ' " -> "'"
        c = text[i]
        if i and c == 0x27 and i + 1 < len(text) and text[i - 1] == 0x20 and text[i + 1] == 0x20:
            out.pop()
            text[i + 1] = 0  # llama.cpp blanks the skipped space in place: it is no longer one
            out.append(c)
            i += 2
            continue
        out.append(c)
        i += 1
    text, out = bytes(out), bytearray()
    for i, c in enumerate(text):  # " 's" " 'm" " 're" " 've" -> without the space
        if i and text[i - 1] == 0x20 and c == 0x27 and i + 1 < len(text):
            nxt = text[i + 1 : i + 3]
            if nxt[:1] in (b"s", b"m") or nxt in (b"re", b"ve"):
                out.pop()
        out.append(c)
    return bytes(out)


__all__ = ["Tokenizer"]
