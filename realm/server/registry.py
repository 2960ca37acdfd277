"""The models a server serves: loaded once each, named by id, looked up by requests.

A model's id is its file's stem, or the alias given for it. The same file named twice (under
two paths, links or copies) is loaded once: files are identified by a hash of their GGUF
header, metadata and tensor index (everything before the tensor data), so a request can
name either id and both reach one model. Requests name ids only, never paths.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from realm.model.model import Model
from realm.server.errors import APIError

HEADER_READ_LIMIT = 1 << 30  # a header past 1 GiB is not a model file this server will hash


def file_identity(path: str | Path) -> str:
    """sha256 of the file's bytes up to its tensor data (header, metadata, tensor index)."""
    from realm.gguf import read_gguf

    with read_gguf(path, tensors_data=False) as gguf:
        end = min(gguf.data_offset, HEADER_READ_LIMIT)
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        digest.update(f.read(end))
    return digest.hexdigest()


@dataclass
class ServedModel:
    id: str
    model: Model
    backend: str
    chat_template: str | None = None  # replaces the file's template (--chat-template)
    created: int = field(default_factory=lambda: int(time.time()))

    def card(self) -> dict:
        """The model object of ``GET /v1/models``."""
        return {
            "id": self.id,
            "object": "model",
            "created": self.created,
            "owned_by": "realm",
            "meta": {
                "n_ctx": self.model.n_ctx,
                "n_vocab": self.model.n_vocab,
                "backend": self.backend,
                "device": getattr(self.model.backend, "device", self.backend),
            },
        }


@dataclass
class ModelSpec:
    """A model to serve: its file and, optionally, the id to serve it under."""

    path: str
    alias: str | None = None

    @property
    def id(self) -> str:
        return self.alias or Path(self.path).stem


class ModelRegistry:
    """The served models by id; `load_all` fills it (in a thread, while /health says 503)."""

    def __init__(self) -> None:
        self._by_id: dict[str, ServedModel] = {}
        self.ready = False
        self.error: str | None = None
        self.on_loaded: Callable[[ServedModel, float], None] | None = None
        self._lock = threading.Lock()

    def add(self, served: ServedModel, ids: list[str] | None = None) -> None:
        with self._lock:
            for model_id in ids or [served.id]:
                self._by_id[model_id] = served

    def get(self, model_id: str | None) -> ServedModel:
        """The model a request names; None means the only one (tokenize, detokenize)."""
        with self._lock:
            if model_id is None and len(set(map(id, self._by_id.values()))) == 1:
                return next(iter(self._by_id.values()))
            found = self._by_id.get(model_id) if model_id is not None else None
            known = sorted(self._by_id)
        if found is None:
            if not self.ready:
                raise APIError(
                    503,
                    "the models are still loading; retry shortly",
                    type="server_error",
                    code="model_loading",
                    headers={"Retry-After": "1"},
                )
            what = (
                "no model named"
                if model_id is not None
                else "name a model: 'model' is required; no model named"
            )
            raise APIError(
                404,
                f"{what} {model_id!r} is served here; served: {', '.join(known)}",
                param="model",
                code="model_not_found",
            )
        return found

    def all(self) -> list[ServedModel]:
        """Each served id once, in the order they were added."""
        with self._lock:
            return [
                ServedModel(i, s.model, s.backend, s.chat_template, s.created) for i, s in self._by_id.items()
            ]

    def engines(self) -> Iterator[tuple[str, str, object]]:
        """(id, backend, engine) of each loaded model, once per model."""
        with self._lock:
            seen: set[int] = set()
            items = []
            for model_id, served in self._by_id.items():
                if id(served.model) not in seen:
                    seen.add(id(served.model))
                    items.append((model_id, served.backend, served.model.engine))
        return iter(items)

    def close(self) -> None:
        """Close every model: requests still running end as cancelled."""
        with self._lock:
            models = {id(s.model): s.model for s in self._by_id.values()}
        for model in models.values():
            model.close()

    def load_all(
        self, specs: list[ModelSpec], load: Callable[[str], Model], chat_template: str | None = None
    ) -> None:
        """Load every spec, each distinct file once; then `ready`. A failure is kept in `error`."""
        try:
            ids = [spec.id for spec in specs]
            duplicate = next((i for i in ids if ids.count(i) > 1), None)
            if duplicate is not None:
                raise ValueError(f"two models would be served as {duplicate!r}: give one --alias")
            by_identity: dict[str, ServedModel] = {}
            for spec in specs:
                identity = file_identity(spec.path)
                served = by_identity.get(identity)
                if served is None:
                    t0 = time.perf_counter()
                    model = load(spec.path)
                    served = ServedModel(spec.id, model, model.backend.name, chat_template)
                    by_identity[identity] = served
                    if self.on_loaded is not None:
                        self.on_loaded(served, time.perf_counter() - t0)
                self.add(served, [spec.id])
            self.ready = True
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
