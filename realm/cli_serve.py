"""`realm serve`: the OpenAI-compatible HTTP server over one or more GGUF models."""

from __future__ import annotations

import argparse
import os
import threading
from pathlib import Path

from realm.errors import InvalidParameterError, RealmError

DEFAULT_PORT = 8000


def add_serve_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    serve = sub.add_parser(
        "serve",
        help="serve models over an OpenAI-compatible HTTP API",
        description="Serve GGUF models over an OpenAI-compatible HTTP API (/v1/completions, "
        "/v1/chat/completions, /v1/models, /health, /metrics). Each model is served under its "
        "file's stem, or --alias. Needs the 'server' extra: pip install 'realm[server]'.",
    )
    serve.add_argument(
        "models", nargs="*", metavar="MODEL.gguf", help="files to serve (default: the default model)"
    )
    serve.add_argument(
        "--alias",
        action="append",
        default=[],
        metavar="ID",
        help="the id to serve the i-th model under (repeat, in order)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    serve.add_argument("--device", default="auto", help="backend device for every model (default auto)")
    serve.add_argument("--n-ctx", type=int, default=None, help="context length per request")
    serve.add_argument("--threads", type=int, default=None, help="CPU threads (the cpu backend)")
    serve.add_argument(
        "--kv-size", type=int, default=None, help="positions the KV pool may hold over all requests together"
    )
    serve.add_argument(
        "--n-seq-max", type=int, default=None, help="the most sequences decoded together in one step"
    )
    serve.add_argument(
        "--max-waiting",
        type=int,
        default=None,
        help="the most requests queued; past it requests get 503 with Retry-After",
    )
    serve.add_argument(
        "--chat-template",
        metavar="FILE",
        default=None,
        help="a Jinja2 chat template for models whose file has none",
    )
    serve.add_argument(
        "--api-key",
        default=os.environ.get("REALM_API_KEY"),
        help="require 'Authorization: Bearer KEY' (default: $REALM_API_KEY, else none)",
    )
    return serve


def cmd_serve(a: argparse.Namespace, out) -> int:
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
            device=a.device,
            n_ctx=a.n_ctx,
            n_threads=a.threads,
            kv_size=a.kv_size,
            n_seq_max=a.n_seq_max,
            max_waiting=a.max_waiting,
        )

    registry = ModelRegistry()
    app = create_app(registry, api_key=a.api_key)
    # The server answers (/health: 503) while the models load, as orchestrators expect.
    loader = threading.Thread(target=_load, args=(registry, specs, load, template), daemon=True)
    loader.start()
    out.write(f"realm: serving {', '.join(s.id for s in specs)} on http://{a.host}:{a.port}/v1\n")
    uvicorn.run(app, host=a.host, port=a.port, log_level="info")
    return 0


def _load(registry, specs, load, template) -> None:
    try:
        registry.load_all(specs, load, template)
    except (RealmError, OSError, ValueError) as exc:
        print(f"realm: error: loading failed: {exc}", flush=True)
