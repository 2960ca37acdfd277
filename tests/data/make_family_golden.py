"""Makes tests/data/families/*.npz: llama.cpp's outputs on small synthetic models.

For families with no small real model on PyPI (qwen2, qwen3, Llama 3.x with RoPE frequency
factors), `realm.testing.write_model` writes a deterministic random-weight model; llama.cpp
(through llama-cpp-python, which the tests do not need) runs it and its logits at every position
and its greedy continuation are stored with the exact arguments and the file's sha256, so a test
can write the same file again and compare. Run from the repository root:

    pip install llama-cpp-python && python tests/data/make_family_golden.py
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from realm.testing import write_model

OUT = Path(__file__).parent / "families"

# name -> write_model arguments (qtype by name). F16 weights keep llama.cpp's own rounding small,
# so the comparison tests the architecture's math; Q8_0 adds the quantized path.
CASES: dict[str, dict] = {
    "qwen2-f16": dict(arch="qwen2", qtype="F16", n_layer=2, seed=11),
    "qwen2-q8_0": dict(arch="qwen2", qtype="Q8_0", n_layer=2, seed=12),
    "qwen3-f16": dict(arch="qwen3", qtype="F16", n_layer=2, seed=13, head_dim=32),
    "llama3-f16": dict(
        arch="llama", qtype="F16", n_layer=2, seed=14, rope_freq_factors=True, rope_base=500000.0
    ),
    "gemma3-f16": dict(arch="gemma3", qtype="F16", n_layer=6, seed=15, tie_embeddings=True, n_head_kv=1),
}
PROMPT = [int(i) for i in np.random.default_rng(0).integers(3, 500, size=40)]
N_GREEDY = 24


def build(name: str, directory: Path) -> Path:
    from realm.gguf.types import GGMLType

    args = dict(CASES[name])
    args["qtype"] = GGMLType[args["qtype"]]
    return write_model(directory / f"{name}.gguf", **args)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    from llama_cpp import Llama

    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            path = build(name, Path(tmp))
            llm = Llama(str(path), n_ctx=128, n_batch=128, logits_all=True, n_threads=2, verbose=False)
            llm.eval(PROMPT)
            logits = np.array(llm.scores[: len(PROMPT)], dtype=np.float32)
            greedy = []
            for _ in range(N_GREEDY):
                token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                greedy.append(token)
                llm.eval([token])
            np.savez_compressed(
                OUT / f"{name}.npz",
                args=json.dumps(CASES[name]),
                sha256=sha256(path),
                prompt=np.asarray(PROMPT, dtype=np.int32),
                logits=logits,
                greedy=np.asarray(greedy, dtype=np.int32),
            )
            print(f"{name}: {path.stat().st_size} bytes, greedy {greedy[:8]}...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
