"""`realm serve`: the OpenAI-compatible HTTP server over one or more GGUF models.

Every option can also come from an environment variable (``REALM_PORT=8080``, ...; the flag
wins). The server logs one line per request (method, path, status, tokens, latency), never
the prompt unless ``--log-prompts``; SIGTERM or Ctrl-C stop it cleanly: no new connections,
in-flight requests get a few seconds to finish, then their streams are cancelled and the
models closed.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

from realm.errors import InvalidParameterError, RealmError

DEFAULT_PORT = 8000
GRACEFUL_SHUTDOWN_SECONDS = 5


def _from_env(name: str, kind=str):
    """The default of an option: ``$REALM_<NAME>``, checked, or None."""
    variable = "REALM_" + name.upper().replace("-", "_")
    raw = os.environ.get(variable)
    if raw is None or raw == "":
        return None
    if kind is bool:
        if raw.lower() not in ("1", "true", "yes", "0", "false", "no"):
            raise InvalidParameterError(f"${variable} must be 1/true/yes or 0/false/no, got {raw!r}")
        return raw.lower() in ("1", "true", "yes")
    try:
        return kind(raw)
    except ValueError as exc:
        raise InvalidParameterError(f"${variable} must be {kind.__name__}, got {raw!r}") from exc


def add_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    serve = sub.add_parser(
        "serve",
        help="serve models over an OpenAI-compatible HTTP API",
        description="Serve GGUF models over an OpenAI-compatible HTTP API (/v1/completions, "
        "/v1/chat/completions, /v1/models, /health, /metrics). Each model is served under its "
        "file's stem, or --alias. Every option can also be set as REALM_<OPTION> in the "
        "environment (REALM_PORT, REALM_API_KEY, ...). Needs the 'server' extra: "
        "pip install 'realm[server]'.",
    )
    option = serve.add_argument
    option("models", nargs="*", metavar="MODEL.gguf", help="files to serve (default: the default model)")
    option(
        "--alias",
        action="append",
        default=[],
        metavar="ID",
        help="the id to serve the i-th model under (repeat, in order)",
    )
    option("--host", default=None, help="address to listen on (default 127.0.0.1)")
    option("--port", type=int, default=None, help=f"port (default {DEFAULT_PORT})")
    option("--device", default=None, help="backend device for every model (default auto)")
    option("--n-ctx", type=int, default=None, help="context length per request (default: trained length)")
    option("--threads", type=int, default=None, help="CPU threads (the cpu backend)")
    option("--kv-size", type=int, default=None, help="positions the KV pool may hold over all requests")
    option("--max-running", type=int, default=None, help="the most sequences decoded together in one step")
    option(
        "--max-queue",
        type=int,
        default=None,
        help="the most requests waiting; past it requests get 503 with Retry-After",
    )
    option(
        "--chat-template",
        metavar="FILE",
        default=None,
        help="a Jinja2 chat template for models whose file has none",
    )
    option("--api-key", default=None, help="require 'Authorization: Bearer KEY' (default: none)")
    option("--log-prompts", action="store_true", default=None, help="log each request's prompt text")
    return serve


_OPTION_TYPES = {
    "host": str,
    "port": int,
    "device": str,
    "n_ctx": int,
    "threads": int,
    "kv_size": int,
    "max_running": int,
    "max_queue": int,
    "chat_template": str,
    "api_key": str,
    "log_prompts": bool,
}


def cmd_serve(a: argparse.Namespace, out) -> int:
    for name, kind in _OPTION_TYPES.items():
        if getattr(a, name) is None:
            setattr(a, name, _from_env(name, kind))
    try:
        import uvicorn

        from realm.server import ModelRegistry, ModelSpec, create_app
    except ImportError as exc:
        raise InvalidParameterError(
            f"realm serve needs the server extra ({exc.name} is missing): pip install 'realm[server]'"
        ) from exc
    import realm
    from realm.cli_run import check_model_file, default_model_path

    paths = a.models or [default_model_path("realm serve MODEL.gguf")]
    if len(a.alias) > len(paths):
        a.parser.error(f"{len(a.alias)} --alias given for {len(paths)} models")
    for path in paths:
        check_model_file(path)
    template = None
    if a.chat_template is not None:
        try:
            template = Path(a.chat_template).read_text(encoding="utf-8")
        except OSError as exc:
            a.parser.error(f"--chat-template {a.chat_template!r}: {exc.strerror}")
    specs = [ModelSpec(p, a.alias[i] if i < len(a.alias) else None) for i, p in enumerate(paths)]

    def load(path: str):
        return realm.load(
            path,
            device=a.device or "auto",
            n_ctx=a.n_ctx,
            n_threads=a.threads,
            kv_size=a.kv_size,
            n_seq_max=a.max_running,
            max_waiting=a.max_queue,
        )

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    registry = ModelRegistry()
    app = create_app(registry, api_key=a.api_key, log_prompts=bool(a.log_prompts))
    # The server answers (/health: 503) while the models load, as orchestrators expect.
    loader = threading.Thread(target=_load, args=(registry, specs, load, template), daemon=True)
    loader.start()
    host, port = a.host or "127.0.0.1", a.port or DEFAULT_PORT
    out.write(f"realm: serving {', '.join(s.id for s in specs)} on http://{host}:{port}/v1\n")
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    try:
        _server_class(uvicorn)(config).run()
    finally:
        registry.close()
    out.write("realm: stopped\n")
    return 0


def _server_class(uvicorn):
    """uvicorn's server, stopping on SIGINT/SIGTERM without re-raising the signal afterwards
    (uvicorn does, which would kill the process before realm closes its models)."""

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self):
            previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
            try:
                yield
            finally:
                for s, handler in previous.items():
                    signal.signal(s, handler)

    return Server


def _load(registry, specs, load, template) -> None:
    try:
        registry.load_all(specs, load, template)
    except (RealmError, OSError, ValueError) as exc:
        logging.getLogger("realm.server").error("loading failed: %s", exc)
