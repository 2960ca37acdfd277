"""`realm.load`: a GGUF path in, a `Model` on the chosen backend out."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from realm.arguments import check_int
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

DEFAULT_N_BATCH = 256
# Far more than a pass needs to keep a CPU or GPU busy; the activation buffers are sized by
# n_batch up front, so an absurd value must fail here and not as a huge allocation.
MAX_N_BATCH = 4096
# The block tables are host lists; past this many positions a typo is likelier than a wish.
MAX_KV_SIZE = 1 << 24


def load(
    path: str | os.PathLike[str],
    device: str = "auto",
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_batch: int = DEFAULT_N_BATCH,
    progress: bool | None = None,
    kv_size: int | None = None,
    n_seq_max: int | None = None,
    max_waiting: int | None = None,
) -> Model:
    """Load a GGUF model onto a backend.

    ``device``: ``"auto"`` (first available of cuda, opencl on a GPU, cpu, numpy), ``"cpu"``,
    ``"cuda"``, ``"cuda:N"``, ``"opencl"``, ``"opencl:P:D"`` or ``"numpy"``.
    ``n_ctx``: context length, at most the model's trained length, which is the default (the
    KV cache grows as it is used, so a large default costs nothing up front).
    ``n_threads``: CPU threads for the ``cpu`` backend (default: see docs/resources.md).
    ``n_batch``: the most prompt tokens one pass runs (1..4096); activations take
    about ``n_batch * (4 * n_embd + 2 * n_ff) * 4`` bytes.
    ``progress``: show a progress bar; ``None`` shows one for large files on a terminal.
    ``kv_size``: positions the paged KV cache may hold over all sequences together (default
    ``max(n_ctx, 16384)``; at least ``n_ctx``); its memory grows with the positions in use,
    up to this. Past it, requests wait for running ones to finish.
    ``n_seq_max``: the most sequences the engine runs in one step (default 32, at most
    ``n_batch``); more requests wait in its queue.
    ``max_waiting``: the most requests that queue (None: no bound); past it a request
    raises `ModelBusyError` at once.

    >>> model = realm.load("SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")   # doctest: +SKIP
    """
    t0 = time.perf_counter()
    if not isinstance(path, (str, os.PathLike)):
        raise InvalidParameterError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise ModelNotFoundError(f"no model file at {path}")
    n_ctx = check_int("n_ctx", n_ctx, minimum=1, allow_none=True)
    n_threads = check_int("n_threads", n_threads, minimum=1, allow_none=True)
    n_batch = check_int("n_batch", n_batch, minimum=1, maximum=MAX_N_BATCH)
    kv_size = check_int("kv_size", kv_size, minimum=1, maximum=MAX_KV_SIZE, allow_none=True)
    n_seq_max = check_int(
        "n_seq_max",
        n_seq_max,
        minimum=1,
        maximum=n_batch,
        allow_none=True,
        hint=" (a step runs at most n_batch tokens)",
    )
    max_waiting = check_int("max_waiting", max_waiting, minimum=0, allow_none=True)
    gguf = read_gguf(path)
    try:
        arch_class = architecture_class(gguf.metadata)
        config = ModelConfig.from_gguf(gguf.metadata, source=path)
        if n_ctx is not None and n_ctx > config.n_ctx_train:
            raise InvalidParameterError(
                f"n_ctx={n_ctx} is past the {config.n_ctx_train} positions {path.name} was trained on "
                f"({config.arch}.context_length); positions past them give unreliable output. "
                f"Pass n_ctx <= {config.n_ctx_train}, or None for the trained length"
            )
        n_ctx = n_ctx or config.n_ctx_train
        if kv_size is not None and kv_size < n_ctx:
            raise InvalidParameterError(
                f"kv_size={kv_size} is less than n_ctx={n_ctx}: one full-length sequence would not fit; "
                f"pass kv_size >= {n_ctx}, or a smaller n_ctx"
            )
        arch = arch_class(config, gguf.metadata)
        tokenizer = Tokenizer.from_metadata(gguf.metadata)
        backend = get_backend(device, n_threads=n_threads)
        show = (
            progress
            if progress is not None
            else (gguf.file_size >= PROGRESS_MIN_BYTES and sys.stderr.isatty())
        )
        weights = _load_weights(WeightLoader(gguf, backend, config, arch), config.n_layer, show, path.name)
        transformer = Transformer(config, arch, weights, backend, n_ctx, n_batch=n_batch, kv_size=kv_size)
        warmup = getattr(backend, "warmup", None)  # optional: compile kernels now, before any text
        if warmup is not None:
            warmup(qtypes={t.qtype for t in gguf.tensors.values()}, progress=progress)
        release = getattr(backend, "release_threads", None)  # the engine's thread runs the model
        if release is not None:
            release()
    except BaseException:
        gguf.close()
        raise
    return Model(
        path,
        gguf,
        config,
        backend,
        tokenizer,
        transformer,
        time.perf_counter() - t0,
        n_seq_max=n_seq_max,
        max_waiting=max_waiting,
    )


def _load_weights(loader: WeightLoader, n_layer: int, show: bool, label: str):
    if not show:
        return loader.load()
    from tqdm import tqdm

    with tqdm(total=n_layer, desc=f"loading {label}", unit="layer", file=sys.stderr) as bar:
        return loader.load(progress=lambda done: bar.update(done - bar.n))
