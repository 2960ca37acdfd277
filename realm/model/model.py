"""`Model`: a loaded GGUF model on a backend, with tokenize, logits, generate and chat."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from realm.arguments import check_bool, check_int, check_stop, check_text, check_token_ids
from realm.backend import Backend
from realm.chat import chat_prompt_tokens
from realm.errors import CallOrderError, ContextOverflowError, ModelBusyError
from realm.generate import (
    Completion,
    InvalidParameterError,
    Sampler,
    SamplingParams,
    TextAssembler,
    decode_loop,
)
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
    ) -> None:
        self.path = path
        self.gguf = gguf
        self.config = config
        self.backend = backend
        self.tokenizer = tokenizer
        self.transformer = transformer
        self.load_seconds = load_seconds
        self._use = _SequenceLock(path.name)

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
        with self._use.call():
            self.transformer.reset()
            return self.transformer.eval(ids, all_logits=True)

    def perplexity(self, text_or_ids: str | Sequence[int]) -> float:
        """exp of the mean negative log-likelihood of each token given the ones before it.

        Text is tokenized as `tokenize` does (BOS where the model adds one); the first token is
        context only. The whole sequence must fit in the context.
        """
        ids = self._prompt_ids("text_or_ids", text_or_ids)
        if len(ids) < 2:
            raise InvalidParameterError(f"text_or_ids must give at least two tokens, got {len(ids)}")
        logits = self.logits(ids)[:-1].astype(np.float64)
        m = logits.max(axis=-1, keepdims=True)
        log_probs = logits - m - np.log(np.exp(logits - m).sum(axis=-1, keepdims=True))
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

    def _generate_ids(
        self,
        ids: list[int],
        params: SamplingParams,
        max_tokens: int | None,
        stop: Sequence[str] | str | None,
        stream: bool,
    ) -> Completion | GenerationStream:
        if not ids:
            raise InvalidParameterError("the prompt is empty: give at least one token")
        max_tokens = check_int("max_tokens", max_tokens, minimum=1, allow_none=True)
        stops = check_stop(stop)
        stream = check_bool("stream", stream)
        self._check_fits(len(ids))
        if max_tokens is None:
            max_tokens = self.n_ctx - len(ids)
        elif len(ids) + max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                f"{self.n_ctx} tokens; lower max_tokens, pass max_tokens=None to stop at the end of the "
                "context, or load with a larger n_ctx"
            )
        run = GenerationStream(self, ids, params, max_tokens, stops)
        if stream:
            return run
        text = "".join(run)
        return Completion(text, run.tokens, run.finish_reason, len(ids), len(run.tokens))

    def _prefill(self, ids: list[int]) -> np.ndarray:
        """Run the prompt, reusing the cached prefix it shares with the previous sequence."""
        t = self.transformer
        common = 0
        for a, b in zip(t.tokens, ids, strict=False):
            if a != b:
                break
            common += 1
        common = min(common, len(ids) - 1)  # at least one token must run to give logits
        t.truncate(common)
        return t.eval(ids[common:])[-1]

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
        if self._use.closed:
            return
        with self._use.call():
            self._use.closed = True
            self.gguf.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.path.name!r}, arch={self.config.arch!r}, device={self.backend.name!r})"


class _SequenceLock:
    """Serializes use of a model's one sequence (its KV cache) between callers.

    Calls from other threads wait their turn. A generation stream holds the lock from its
    first piece until it is exhausted or closed, so a second call from the thread that is
    still iterating it cannot wait (it would wait for itself): it raises `ModelBusyError`.
    """

    def __init__(self, name: str) -> None:
        self._lock = threading.Lock()
        self._stream_thread: int | None = None  # the thread iterating the stream that holds the lock
        self.name = name
        self.closed = False

    def _refuse_own_stream(self) -> None:
        if self.closed:
            raise CallOrderError(f"model {self.name} is closed; load it again to use it")
        if self._stream_thread == threading.get_ident():
            raise ModelBusyError(
                "this model is in use by a generation stream that this thread has not finished; "
                "exhaust it or call its close() before starting another call (one model runs one "
                "sequence at a time; other threads wait their turn)"
            )

    @contextmanager
    def call(self) -> Iterator[None]:
        self._refuse_own_stream()
        with self._lock:
            self._refuse_own_stream()  # closed while this call waited its turn
            yield

    def acquire_for_stream(self) -> None:
        self._refuse_own_stream()
        self._lock.acquire()
        if self.closed:  # closed while this call waited its turn
            self._lock.release()
            self._refuse_own_stream()
        self._stream_thread = threading.get_ident()

    def release_stream(self) -> None:
        self._stream_thread = None
        self._lock.release()


class GenerationStream:
    """One generate() call, iterated for its text pieces (what ``stream=True`` returns).

    After the iteration ends, ``tokens`` holds the generated ids and ``finish_reason`` says
    why it ended: ``"stop"`` (an end-of-generation token or a stop string) or ``"length"``.
    From its first piece until it ends the stream has the model to itself: other threads'
    calls wait, and the iterating thread gets `ModelBusyError` if it starts another call
    first. ``close()`` (or a ``with`` block) ends a stream early.
    """

    def __init__(
        self, model: Model, ids: list[int], params: SamplingParams, max_tokens: int, stop: list[str]
    ) -> None:
        self.model, self.ids, self.params, self.max_tokens, self.stop = model, ids, params, max_tokens, stop
        self.tokens: list[int] = []
        self.finish_reason = "length"
        # A weak reference: the generator refers to this stream, and a strong one back would make
        # a cycle that keeps the model locked after `for piece in stream: break` until the
        # garbage collector runs. Weakly held, the generator ends (and frees the model) as soon
        # as its loop lets go of it.
        self._pieces_ref: weakref.ref[Generator[str, None, None]] | None = None

    def __iter__(self) -> Iterator[str]:
        if self._pieces_ref is not None:
            raise CallOrderError("a GenerationStream can be iterated once; call generate() again")
        pieces = self._pieces()
        self._pieces_ref = weakref.ref(pieces)
        return pieces

    def close(self) -> None:
        """Stop generating and give the model back to other callers."""
        pieces = self._pieces_ref() if self._pieces_ref is not None else None
        if pieces is not None:
            pieces.close()

    def __enter__(self) -> GenerationStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _pieces(self) -> Generator[str, None, None]:
        use = self.model._use
        use.acquire_for_stream()
        try:
            yield from self._generate()
        finally:
            use.release_stream()

    def _generate(self) -> Iterator[str]:
        model = self.model
        tok = model.tokenizer
        first = model._prefill(self.ids)
        history = list(self.ids)
        text = TextAssembler(lambda t: tok.token_to_bytes(t, special=False), self.stop)

        def step(token: int) -> np.ndarray:
            return model.transformer.eval([token])[-1]

        for token, is_end in decode_loop(
            step, first, Sampler(self.params), history, self.max_tokens, tok.eot_ids
        ):
            if is_end:
                self.finish_reason = "stop"
                break
            self.tokens.append(token)
            piece = text.push(token)
            if piece:
                yield piece
            if text.stopped:
                self.finish_reason = "stop"
                return
        tail = text.flush()
        if tail:
            yield tail
