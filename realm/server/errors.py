"""Errors as OpenAI clients parse them: ``{"error": {"message", "type", "param", "code"}}``.

Every refusal the server makes is an `APIError` with its HTTP status; realm's own errors and
request validation failures are mapped here, in one place, so each says which parameter was
wrong and what to do.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from realm.errors import (
    ChatTemplateError,
    ContextOverflowError,
    InvalidParameterError,
    ModelBusyError,
    PoolFullError,
    RealmError,
)

RETRY_AFTER_SECONDS = 1
# Names pydantic puts in an error's location for the member of a union that failed.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "list", "dict"})


class APIError(Exception):
    """A refusal: HTTP ``status`` and the OpenAI error object's fields."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        body = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return JSONResponse({"error": body}, status_code=self.status, headers=self.headers)


def from_realm_error(exc: RealmError, param: str | None = None) -> APIError:
    """The HTTP form of an error realm raised while taking a request."""
    if isinstance(exc, ContextOverflowError):
        return APIError(400, str(exc), param=param or "messages", code="context_length_exceeded")
    if isinstance(exc, ModelBusyError | PoolFullError):
        return APIError(
            503,
            str(exc),
            type="server_error",
            code="server_busy",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )
    if isinstance(exc, ChatTemplateError):
        return APIError(400, str(exc), param="messages", code="chat_template_error")
    if isinstance(exc, InvalidParameterError):
        return APIError(400, str(exc), param=param, code="invalid_value")
    return APIError(500, str(exc), type="server_error", code="internal_error")


def validation_error(exc: RequestValidationError) -> APIError:
    """A body that does not parse, or a field of the wrong type or out of range."""
    first = exc.errors()[0]
    loc: list[str] = []
    for part in first.get("loc", ())[1:]:  # loc[0] is "body"
        if isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or "-" in part):
            break  # which member of a union failed: not a parameter name
        loc.append(str(part))
    param = ".".join(loc) or None
    where = f"'{param}': " if param else ""
    return APIError(
        400,
        f"{where}{first.get('msg', 'invalid request')}",
        param=param,
        code="invalid_value" if param else "invalid_request",
    )


async def handle_api_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, APIError)
    return exc.response()
