"""One log line per request: method, path, status, tokens, latency (never the prompt).

Pure ASGI middleware, so a streamed response is logged when its last byte is sent, with the
tokens it carried (the route leaves its `Run` in ``request.state.run``).
"""

from __future__ import annotations

import logging
import time

LOG = logging.getLogger("realm.server")


class AccessLog:
    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status: list[int] = []

        async def send_and_note(message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            run = scope.get("state", {}).get("run")
            tokens = f" prompt_tokens={run.n_prompt} generated_tokens={run.n_generated}" if run else ""
            LOG.info(
                "%s %s %s%s %.3fs",
                scope["method"],
                scope["path"],
                status[0] if status else "-",
                tokens,
                time.perf_counter() - start,
            )
