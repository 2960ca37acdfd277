"""`realm.load`: a GGUF path in, a `Model` on the chosen backend out."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from realm.backend import get_backend
from realm.errors import InvalidParameterError, ModelNotFoundError
from realm.gguf.reader import read_gguf
from realm.model.architecture import architecture_class
from realm.model.config import ModelConfig
from realm.model.model import Model
from realm.model.transformer import Transformer
from realm.model.weights import WeightLoader
from realm.tokenizer import Tokenizer

# Files at least this large show a progress bar while their weights go to the device.
PROGRESS_MIN_BYTES = 256 * 1024 * 1024


def load(
    path: str | os.PathLike[str],
    device: str = "auto",
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_batch: int = 256,
    progress: bool | None = None,
) -> Model:
    """Load a GGUF model onto a backend.

    ``device``: ``"auto"`` (first available of cuda, opencl on a GPU, cpu, numpy), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, ``"opencl"``, ``"opencl:P:D"`` or ``"numpy"``.
    ``n_ctx``: context length; defaults to the model's trained length (the KV cache grows as
    it is used, so a large default costs nothing up front).
    ``progress``: show a progress bar; ``None`` shows one for large files on a terminal.

    >>> model = realm.load("SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")   # doctest: +SKIP
    """
    t0 = time.perf_counter()
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"no model file at {path}")
    if n_ctx is not None and (isinstance(n_ctx, bool) or not isinstance(n_ctx, int) or n_ctx < 1):
        raise InvalidParameterError(f"n_ctx must be a positive integer or None, got {n_ctx!r}")
    if isinstance(n_batch, bool) or not isinstance(n_batch, int) or n_batch < 1:
        raise InvalidParameterError(f"n_batch must be a positive integer, got {n_batch!r}")
    gguf = read_gguf(path)
    try:
        arch_class = architecture_class(gguf.metadata)
        config = ModelConfig.from_gguf(gguf.metadata)
        arch = arch_class(config, gguf.metadata)
        tokenizer = Tokenizer.from_metadata(gguf.metadata)
        backend = get_backend(device, n_threads=n_threads)
        show = (
            progress
            if progress is not None
            else (gguf.file_size >= PROGRESS_MIN_BYTES and sys.stderr.isatty())
        )
        weights = _load_weights(WeightLoader(gguf, backend, config, arch), config.n_layer, show, path.name)
        transformer = Transformer(
            config, arch, weights, backend, n_ctx or config.n_ctx_train, n_batch=n_batch
        )
    except BaseException:
        gguf.close()
        raise
    return Model(path, gguf, config, backend, tokenizer, transformer, time.perf_counter() - t0)


def _load_weights(loader: WeightLoader, n_layer: int, show: bool, label: str):
    if not show:
        return loader.load()
    from tqdm import tqdm

    with tqdm(total=n_layer, desc=f"loading {label}", unit="layer", file=sys.stderr) as bar:
        return loader.load(progress=lambda done: bar.update(done - bar.n))
