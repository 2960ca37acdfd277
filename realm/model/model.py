"""`Model`: a loaded GGUF model on a backend, with tokenize, logits, generate and chat."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Generator, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realm.arguments import check_bool, check_int, check_stop, check_text, check_token_ids
from realm.backend import Backend
from realm.chat import chat_prompt_tokens
from realm.engine.engine import Engine
from realm.engine.request import Request, RequestHandle
from realm.errors import CallOrderError, ContextOverflowError
from realm.generate import Completion, InvalidParameterError, SamplingParams, log_softmax
from realm.gguf.reader import GGUFFile
from realm.model.config import ModelConfig
from realm.model.describe import describe
from realm.model.transformer import Transformer
from realm.tokenizer import Tokenizer


class Model:
    """A model ready to run. Make one with `realm.load`.

    >>> model = realm.load("SmolLM2-135M-Instruct.Q4_1.gguf", device="cpu")   # doctest: +SKIP
    >>> model.generate("The capital of France is", max_tokens=8, temperature=0).text  # doctest: +SKIP
    ' Paris.\\n\\nThe answer is:'
    """

    def __init__(
        self,
        path: Path,
        gguf: GGUFFile,
        config: ModelConfig,
        backend: Backend,
        tokenizer: Tokenizer,
        transformer: Transformer,
        load_seconds: float,
        n_seq_max: int | None = None,
        max_waiting: int | None = None,
    ) -> None:
        self.path = path
        self.gguf = gguf
        self.config = config
        self.backend = backend
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.load_seconds = load_seconds
        # Every call that runs the model is a request to the engine; one sequence is a batch of one.
        self.engine = Engine(transformer, tokenizer, n_seq_max=n_seq_max, max_waiting=max_waiting)

    # ------------------------------------------------------------------ tokens

    @property
    def n_ctx(self) -> int:
        return self.transformer.n_ctx

    @property
    def n_vocab(self) -> int:
        return self.config.n_vocab

    def tokenize(self, text: str, add_bos: bool | None = None, special: bool = False) -> list[int]:
        """Text to token ids, exactly as llama.cpp tokenizes it."""
        return self.tokenizer.tokenize(text, add_bos=add_bos, special=special)

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.detokenize(ids)

    # ------------------------------------------------------------------ logits

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of a fresh sequence: float32, shape ``(len(ids), n_vocab)``."""
        ids = check_token_ids("ids", ids, self.n_vocab)
        self._check_fits(len(ids))
        return self._submit(Request(ids, max_tokens=0, all_logits=True)).logits()

    def perplexity(self, text_or_ids: str | Sequence[int]) -> float:
        """exp of the mean negative log-likelihood of each token given the ones before it.

        Text is tokenized as `tokenize` does (BOS where the model adds one); the first token is
        context only. The whole sequence must fit in the context.
        """
        ids = self._prompt_ids("text_or_ids", text_or_ids)
        if len(ids) < 2:
            raise InvalidParameterError(f"text_or_ids must give at least two tokens, got {len(ids)}")
        log_probs = log_softmax(self.logits(ids)[:-1])
        nll = -log_probs[np.arange(len(ids) - 1), ids[1:]]
        return float(np.exp(nll.mean()))

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        prompt: str | Sequence[int],
        max_tokens: int | None = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        stream: bool = False,
    ) -> Completion | GenerationStream:
        """Continue ``prompt`` (text, or token ids used as they are).

        Returns a `Completion` (text, tokens, finish_reason, token counts), or with
        ``stream=True`` a `GenerationStream`: an iterator of text pieces that never splits a
        UTF-8 character, with ``finish_reason`` and ``tokens`` once it is exhausted.
        ``max_tokens=None`` generates until an end token or the end of the context.
        Temperature 0 is greedy; the same seed gives the same output.
        """
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        return self._generate_ids(self._prompt_ids("prompt", prompt), params, max_tokens, stop, stream)

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        max_tokens: int | None = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
        stream: bool = False,
        chat_template: str | None = None,
    ) -> Completion | GenerationStream:
        """Render ``messages`` with the model's chat template and generate the assistant's reply.

        Generation ends at the template's end-of-turn token (finish_reason ``"stop"``).
        ``chat_template`` replaces the file's template (a Jinja2 string) for files without one.
        The other parameters are `generate`'s.

        >>> model.chat([{"role": "user", "content": "Hi!"}], temperature=0).text   # doctest: +SKIP
        """
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        ids = self.chat_tokens(messages, chat_template=chat_template)
        return self._generate_ids(ids, params, max_tokens, stop, stream)

    def chat_tokens(self, messages: Sequence[dict[str, Any]], chat_template: str | None = None) -> list[int]:
        """The prompt token ids that `chat` feeds for ``messages``."""
        template = chat_template
        if template is None:
            template = self.gguf.metadata.get("tokenizer.chat_template")
        return chat_prompt_tokens(self.tokenizer, template, messages, source=str(self.path))

    def generate_batch(
        self,
        prompts: Sequence[str | Sequence[int]],
        max_tokens: int | None = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] | str | None = None,
    ) -> list[Completion]:
        """`generate` for many prompts at once, run together in the engine's batched steps.

        Completion ``i`` is what ``generate(prompts[i], ...)`` returns with the same arguments
        (each prompt gets its own sampler, seeded with ``seed``).

        >>> done = model.generate_batch(["1, 2,", "a, b,"], max_tokens=4, temperature=0)  # doctest: +SKIP
        >>> [c.text for c in done]                                                    # doctest: +SKIP
        """
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidParameterError(
                f"prompts must be a list of prompts (text or token ids), got {type(prompts).__name__}"
            )
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, repeat_last_n, seed)
        requests = [
            self._generation_request(self._prompt_ids(name, p), params, max_tokens, stop, name)
            for i, p in enumerate(prompts)
            for name in [f"prompts[{i}]"]
        ]
        handles: list[RequestHandle] = []
        try:
            for request in requests:
                handles.append(self._submit(request))
            return [_completion(h) for h in handles]
        finally:
            for h in handles:
                h.cancel()  # a no-op for finished ones; frees the rest when one failed

    def _prompt_ids(self, name: str, prompt: Any) -> list[int]:
        """Token ids of a text prompt (tokenized) or of token ids (checked against the vocabulary)."""
        if isinstance(prompt, str):
            return self.tokenize(check_text(name, prompt))
        return check_token_ids(name, prompt, self.n_vocab)

    def _check_fits(self, n: int) -> None:
        if n > self.n_ctx:
            raise ContextOverflowError(
                f"{n} tokens do not fit in the context of {self.n_ctx} tokens; shorten the input or "
                f"load the model with a larger n_ctx (trained context: {self.config.n_ctx_train})"
            )

    def _generation_request(
        self,
        ids: list[int],
        params: SamplingParams,
        max_tokens: int | None,
        stop: Sequence[str] | str | None,
        name: str = "prompt",
    ) -> Request:
        if not ids:
            raise InvalidParameterError(f"{name} is empty: give at least one token")
        max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
        stops = check_stop(stop)
        self._check_fits(len(ids))
        if max_tokens is None:
            max_tokens = self.n_ctx - len(ids)
        elif len(ids) + max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                f"{self.n_ctx} tokens; lower max_tokens, pass max_tokens=None to stop at the end of the "
                "context, or load with a larger n_ctx"
            )
        return Request(ids, params, max_tokens, tuple(stops))

    def _generate_ids(
        self,
        ids: list[int],
        params: SamplingParams,
        max_tokens: int | None,
        stop: Sequence[str] | str | None,
        stream: bool,
    ) -> Completion | GenerationStream:
        request = self._generation_request(ids, params, max_tokens, stop)
        stream = check_bool("stream", stream)
        if stream:
            return GenerationStream(self, request)
        handle = self._submit(request)
        try:
            return _completion(handle)
        finally:
            handle.cancel()  # frees the blocks at once if reading failed

    def _submit(self, request: Request) -> RequestHandle:
        if self.engine.closed:
            raise CallOrderError(f"model {self.path.name} is closed; load it again to use it")
        return self.engine.submit(request)

    # ------------------------------------------------------------------ description

    def info(self) -> dict[str, Any]:
        """Architecture, parameter count, tensor types, file size, context, backend and device."""
        info = describe(self.gguf, self.config)
        info.update(
            context_length=self.n_ctx,
            backend=self.backend.name,
            device=getattr(self.backend, "device", self.backend.name),
            load_seconds=round(self.load_seconds, 3),
        )
        return info

    def close(self) -> None:
        """Release the file; later calls that run the model raise `CallOrderError`."""
        if self.engine.closed:
            return
        if self.transformer.pass_open_in_this_thread():
            self.transformer.reset()  # the engine's step waits for this thread's open research pass
        self.engine.close()  # cancels what is still running
        self.transformer.closed = True
        self.gguf.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.path.name!r}, arch={self.config.arch!r}, device={self.backend.name!r})"


def _completion(handle: RequestHandle) -> Completion:
    text = handle.result()
    if handle.finish_reason == "cancelled":  # only Model.close cancels a call that is not a stream
        raise CallOrderError("the model was closed while this call ran; its output is incomplete")
    reason = handle.finish_reason or "stop"
    return Completion(text, handle.tokens, reason, handle.n_prompt, len(handle.tokens))


class GenerationStream:
    """One generate() call, iterated for its text pieces (what ``stream=True`` returns).

    After the iteration ends, ``tokens`` holds the generated ids and ``finish_reason`` says
    why it ended: ``"stop"`` (an end-of-generation token or a stop string) or ``"length"``.
    The request starts when iteration starts and runs in the model's engine beside any
    others; ``close()`` (or a ``with`` block, or dropping the iterator) cancels it and frees
    its KV blocks at once.
    """

    def __init__(self, model: Model, request: Request) -> None:
        self.model, self.request = model, request
        self.tokens: list[int] = []
        self.finish_reason: str | None = None
        self._handle: RequestHandle | None = None
        self._closed = False
        # A weak reference: the generator refers to this stream, and a strong one back would make
        # a cycle that keeps the request running after `for piece in stream: break` until the
        # garbage collector runs. Weakly held, the generator ends (and cancels the request) as
        # soon as its loop lets go of it.
        self._pieces_ref: weakref.ref[Generator[str, None, None]] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._pieces_ref is not None:
            raise CallOrderError("a GenerationStream can be iterated once; call generate() again")
        pieces = self._pieces()
        self._pieces_ref = weakref.ref(pieces)
        return pieces

    def close(self) -> None:
        """Stop generating and free the request's KV blocks; any thread may call it."""
        self._closed = True
        if self._handle is not None:
            self._handle.cancel()  # thread-safe: a reader blocked in another thread ends
        pieces = self._pieces_ref() if self._pieces_ref is not None else None
        if pieces is not None and not pieces.gi_running:
            with contextlib.suppress(ValueError):  # started running in another thread meanwhile
                pieces.close()

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pieces(self) -> Generator[str, None, None]:
        if self._closed:
            self.finish_reason = "cancelled"
            return
        handle = self._handle = self.model._submit(self.request)
        self.tokens = handle.tokens  # the handle appends to it as pieces are read
        try:
            yield from handle
        finally:
            handle.cancel()
            self.finish_reason = handle.finish_reason
