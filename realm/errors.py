"""The one exception family realm raises.

Every message names the file, tensor, key or parameter involved, what was
expected, what was found and, where there is one, what to do about it.
"""

from __future__ import annotations


class RealmError(Exception):
    """Base class of every error realm raises on purpose."""


class GGUFFormatError(RealmError, ValueError):
    """A GGUF file is malformed, truncated or hostile."""


class UnsupportedModelError(RealmError):
    """The file describes an architecture realm cannot build."""


class UnsupportedQuantError(RealmError):
    """A tensor uses a GGML type that realm (or the chosen backend) cannot run."""


class BackendUnavailableError(RealmError):
    """The requested backend or device is not present; the message says why and how to fix it."""


class BackendArgumentError(RealmError, ValueError):
    """A backend op or upload got arrays of the wrong shape, dtype or size."""


class InvalidParameterError(RealmError, ValueError):
    """A generation, sampling or loading parameter is out of range."""


class InvalidDeviceError(InvalidParameterError, BackendUnavailableError):
    """A device string that names no device ('gpu-1', 'cuda:x', a number): a bad parameter."""


class ContextOverflowError(RealmError, ValueError):
    """A sequence does not fit in the model's context window."""


class ChatTemplateError(RealmError):
    """A model has no chat template, or its template failed to render."""


class ModelNotFoundError(RealmError, FileNotFoundError):
    """A model file (or the default model package) is not where it was looked for."""


class NumericalError(RealmError, ArithmeticError):
    """A forward pass or the sampler met NaN or infinite values where numbers were needed."""


class ModelBusyError(RealmError, RuntimeError):
    """The engine's queue is full (it holds ``max_waiting`` requests); retry later."""


class PoolFullError(RealmError):
    """The KV block pool has no room for a request; queue it and retry, or refuse it."""


class CallOrderError(RealmError, RuntimeError):
    """A call came out of order: a research step before its pass began, a stream iterated twice."""
