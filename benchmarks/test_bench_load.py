"""pytest-benchmark: opening the real models with read_gguf and with gguf.GGUFReader.

python -m pytest benchmarks/test_bench_load.py --benchmark-only
"""

from __future__ import annotations

import gguf
import pytest

from benchmarks.bench_load import MODELS
from realm.gguf import read_gguf


@pytest.fixture(scope="module", params=list(MODELS))
def model_path(request):
    path = MODELS[request.param]()
    if path is None:
        pytest.skip(f"{request.param} is not installed")
    return path


def test_read_gguf(benchmark, model_path):
    def load():
        with read_gguf(model_path) as f:
            return len(f.tensors), len(f.metadata)

    n_tensors, n_keys = benchmark(load)
    assert n_tensors > 0 and n_keys > 0


def test_read_gguf_header_only(benchmark, model_path):
    def load():
        with read_gguf(model_path, tensors_data=False) as f:
            return len(f.get("tokenizer.ggml.tokens"))

    assert benchmark(load) > 0


def test_gguf_reader(benchmark, model_path):
    # A few rounds only: one load takes seconds.
    reader = benchmark.pedantic(gguf.GGUFReader, args=(model_path,), rounds=3, iterations=1)
    assert len(reader.tensors) > 0
