"""A realm server started for real on a loopback port, for the server tests.

`served` (a fixture in conftest.py) serves SmolLM2 as 'smol' (and the same file again as
'smol-again') and a small random model without a chat template as 'tiny', for a whole module.
"""

from __future__ import annotations

import threading
import time

import uvicorn

import realm
from realm.models_on_pypi import smollm2_path
from realm.server import ModelRegistry, ModelSpec, create_app
from realm.testing import write_model

N_CTX = 512


class LiveServer:
    """uvicorn serving `app` on 127.0.0.1 in a thread, on a free port."""

    def __init__(self, app) -> None:
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.02)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def start_served(tmp_path_factory):
    """One server: SmolLM2 as 'smol' (and the same file again as 'smol-again'), and a small
    random model without a chat template as 'tiny'."""
    tiny = write_model(
        tmp_path_factory.mktemp("server") / "tiny.gguf",
        n_ctx=N_CTX,
        metadata={"tokenizer.chat_template": None},
    )
    registry = ModelRegistry()
    app = create_app(registry)
    loads = []

    def load(path):
        loads.append(path)
        return realm.load(path, device="cpu", n_ctx=N_CTX, n_threads=2)

    registry.load_all(
        [
            ModelSpec(str(smollm2_path()), "smol"),
            ModelSpec(str(smollm2_path()), "smol-again"),
            ModelSpec(str(tiny)),
        ],
        load,
    )
    live = LiveServer(app)
    live.registry = registry
    live.loads = loads
    return live


def stop_served(live: LiveServer) -> None:
    live.stop()
    for s in {id(s.model): s for s in live.registry.all()}.values():
        s.model.close()
