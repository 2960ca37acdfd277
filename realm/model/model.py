"""`Model`: a loaded GGUF model on a backend, with tokenize, logits, generate and chat."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from realm.backend import Backend
from realm.chat import chat_prompt_tokens
from realm.errors import ContextOverflowError
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
    ' Paris. It is the largest city in'
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
        return self.tokenizer.detokenize(list(ids))

    # ------------------------------------------------------------------ logits

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """Logits at every position of a fresh sequence: float32, shape ``(len(ids), n_vocab)``."""
        ids = list(ids)
        if not ids:
            raise ValueError("logits() needs at least one token id")
        self._check_fits(len(ids))
        self.transformer.reset()
        return self.transformer.eval(ids, all_logits=True)

    def perplexity(self, text_or_ids: str | Sequence[int]) -> float:
        """exp of the mean negative log-likelihood of each token given the ones before it.

        Text is tokenized as `tokenize` does (BOS where the model adds one); the first token is
        context only. The whole sequence must fit in the context.
        """
        ids = self.tokenize(text_or_ids) if isinstance(text_or_ids, str) else [int(i) for i in text_or_ids]
        if len(ids) < 2:
            raise ValueError("perplexity needs at least two tokens")
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
        ids = self.tokenize(prompt) if isinstance(prompt, str) else [int(i) for i in prompt]
        return self._generate_ids(ids, params, max_tokens, stop, stream)

    def chat(
        self,
        messages: Sequence[dict[str, Any]],
        max_tokens: int | None = 256,
        stream: bool = False,
        chat_template: str | None = None,
        **sampling: Any,
    ) -> Completion | GenerationStream:
        """Render ``messages`` with the model's chat template and generate the assistant's reply.

        Generation ends at the template's end-of-turn token (finish_reason ``"stop"``).
        ``chat_template`` replaces the file's template (a Jinja2 string) for files without one.

        >>> model.chat([{"role": "user", "content": "Hi!"}], temperature=0).text   # doctest: +SKIP
        """
        ids = self.chat_tokens(messages, chat_template=chat_template)
        stop = sampling.pop("stop", None)
        params = SamplingParams(**sampling)
        return self._generate_ids(ids, params, max_tokens, stop, stream)

    def chat_tokens(self, messages: Sequence[dict[str, Any]], chat_template: str | None = None) -> list[int]:
        """The prompt token ids that `chat` feeds for ``messages``."""
        template = chat_template or self.gguf.metadata.get("tokenizer.chat_template")
        return chat_prompt_tokens(self.tokenizer, template, messages, source=str(self.path))

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
        if max_tokens is not None and (
            isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
        ):
            raise InvalidParameterError(f"max_tokens must be an integer >= 1 or None, got {max_tokens!r}")
        self._check_fits(len(ids))
        if max_tokens is None:
            max_tokens = self.n_ctx - len(ids)
        elif len(ids) + max_tokens > self.n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(ids)} tokens) + max_tokens ({max_tokens}) exceeds the context of "
                f"{self.n_ctx} tokens; lower max_tokens, pass max_tokens=None to stop at the end of the "
                "context, or load with a larger n_ctx"
            )
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        if not all(isinstance(s, str) for s in stops):
            raise InvalidParameterError(f"stop must be a string or a list of strings, got {stop!r}")
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
        self.gguf.close()

    def __enter__(self) -> Model:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Model({self.path.name!r}, arch={self.config.arch!r}, device={self.backend.name!r})"


class GenerationStream:
    """One generate() call, iterated for its text pieces (what ``stream=True`` returns).

    After the iteration ends, ``tokens`` holds the generated ids and ``finish_reason`` says
    why it ended: ``"stop"`` (an end-of-generation token or a stop string) or ``"length"``.
    """

    def __init__(
        self, model: Model, ids: list[int], params: SamplingParams, max_tokens: int, stop: list[str]
    ) -> None:
        self.model, self.ids, self.params, self.max_tokens, self.stop = model, ids, params, max_tokens, stop
        self.tokens: list[int] = []
        self.finish_reason = "length"
        self._started = False

    def __iter__(self) -> Iterator[str]:
        if self._started:
            raise RuntimeError("a GenerationStream can be iterated once; call generate() again")
        self._started = True
        return self._pieces()

    def _pieces(self) -> Iterator[str]:
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
