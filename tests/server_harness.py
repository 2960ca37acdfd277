"""Realm servers for the server tests: `realm serve` in a subprocess on a free loopback port
(the `served` fixture in conftest.py), and uvicorn in a thread for tests that set a server up
in ways the command line does not (`LiveServer`).

`served` runs SmolLM2 on ``cpu`` as 'smol' (and the same file again as 'smol-again') and a
small random model without a chat template as 'tiny'. Tests compare what it answers with
`reference`, the same SmolLM2 file loaded in the test process: the ``cpu`` backend is
batch-invariant, so a request's greedy output is the same alone in the test process or among
others in the server.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import uvicorn

import realm
from realm.models_on_pypi import smollm2_path
from realm.testing import write_model

N_CTX = 512


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``python -m realm serve ARGS --port P``, its output in a file, healthy when started."""

    def __init__(
        self, args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 120
    ) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "w")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "realm", "serve", *args, "--port", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
        self.statuses: list[int] = []  # /health answers until healthy
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, f"realm serve exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"realm serve never became healthy:\n{self.log()}"
            try:
                status = httpx.get(self.base + "/health").status_code
            except httpx.TransportError:
                time.sleep(0.1)
                continue
            self.statuses.append(status)
            if status == 200:
                break
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[str, float]:
        """``/metrics`` as {sample name with labels: value}."""
        values = {}
        for line in httpx.get(self.base + "/metrics").text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def rss_bytes(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) * 1024

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self._log.close()


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


def start_served(tmp_path_factory) -> ServerProcess:
    folder = tmp_path_factory.mktemp("server")
    tiny = write_model(folder / "tiny.gguf", n_ctx=N_CTX, metadata={"tokenizer.chat_template": None})
    smol = str(smollm2_path())
    live = ServerProcess(
        [
            smol,
            smol,
            str(tiny),
            "--alias",
            "smol",
            "--alias",
            "smol-again",
            "--device",
            "cpu",
            "--threads",
            "2",
            "--n-ctx",
            str(N_CTX),
        ],
        folder / "server.log",
    )
    live.reference = realm.load(smol, device="cpu", n_ctx=N_CTX, n_threads=2)
    return live


def stop_served(live: ServerProcess) -> None:
    live.reference.close()
    assert live.stop() == 0, live.log()
