"""The `realm` command: run, info, backends, serve."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from realm import __version__
from realm.cli_run import add_run_parser, check_model_file, cmd_run, default_model_path
from realm.cli_serve import add_serve_parser, cmd_serve
from realm.errors import RealmError

# The status a shell gives a command that SIGINT ended (128 + 2): scripts can tell it apart.
EXIT_INTERRUPTED = 130
EXIT_ERROR = 2  # argparse's status for a bad command line; realm's errors share it


class Output:
    """stdout, flushed per write, remembering whether a line is still open.

    An interrupt or an error in the middle of streamed text closes that line first, so the
    shell prompt (or the error on stderr) does not land at the end of the text.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.mid_line = False

    def write(self, text: str) -> None:
        if text:
            self.stream.write(text)
            self.stream.flush()
            self.mid_line = not text.endswith("\n")

    def end_line(self) -> None:
        # OSError: stdout went away (a closed pipe), so there is no line left to tidy.
        if self.mid_line:
            with contextlib.suppress(OSError):
                self.write("\n")


def one_line(text: str) -> str:
    """``text`` with control characters escaped: one terminal line, and no escape sequences
    from a hostile file's names reaching the terminal."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _parsers() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = argparse.ArgumentParser(
        prog="realm", description="Run GGUF language models on pluggable backends."
    )
    parser.add_argument("--version", action="version", version=f"realm {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{run,info,backends,serve}")
    commands = {"run": add_run_parser(sub)}

    info = sub.add_parser("info", help="describe a GGUF model", description="Describe a GGUF model: "
                          "architecture, hyperparameters, parameter count, tensor types.")
    info.add_argument("model", nargs="?", default=None, metavar="MODEL.gguf",
                      help="the file to describe (default: the default model)")
    info.add_argument("--json", action="store_true", help="print JSON")
    commands["info"] = info

    commands["backends"] = sub.add_parser(
        "backends", help="list backends and their devices, or why they are unavailable"
    )
    commands["serve"] = add_serve_parser(sub)
    return parser, commands


def build_parser() -> argparse.ArgumentParser:
    """The `realm` argument parser (every subcommand)."""
    return _parsers()[0]


def cmd_info(a: argparse.Namespace, out: Output) -> int:
    from realm.gguf.reader import read_gguf
    from realm.model.config import ModelConfig
    from realm.model.describe import describe

    path = a.model
    if path is None:
        path = default_model_path("realm info MODEL.gguf")
    else:
        check_model_file(path)
    with read_gguf(path) as f:
        info = describe(f, ModelConfig.from_gguf(f.metadata, source=f.path))
    if a.json:
        out.write(json.dumps(info, indent=2) + "\n")
        return 0
    for key, value in info.items():
        if isinstance(value, dict):
            out.write(f"{key}:\n")
            for k, v in value.items():
                out.write(f"  {one_line(str(k)):<18} {one_line(str(v))}\n")
        else:
            out.write(f"{key:<20} {one_line(str(value))}\n")
    return 0


def cmd_backends(a: argparse.Namespace, out: Output) -> int:
    import realm

    for b in realm.backends():
        if b.available:
            out.write(f"{b.name:<8} available\n")
            for d in b.devices:
                mem = f"  {d.memory_bytes / 2**30:.1f} GiB" if d.memory_bytes else ""
                out.write(f"  {d.device:<14} {d.kind:<4} {one_line(d.name)}{mem}\n")
        else:
            out.write(f"{b.name:<8} unavailable: {one_line(b.reason)}\n")
    return 0


HANDLERS = {"run": cmd_run, "info": cmd_info, "backends": cmd_backends, "serve": cmd_serve}


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser, commands = _parsers()
    a, extras = parser.parse_known_args(argv)
    a.parser = commands[a.command]
    # argparse hands positionals that follow an option to `extras` (`realm run m.gguf --chat hi`);
    # for `run` they are the rest of [MODEL.gguf] PROMPT.
    unknown = [x for x in extras if x.startswith("-") or a.command != "run"]
    if unknown:
        a.parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extras:
        a.args.extend(extras)
    return a


def _interrupted(out: Output) -> int:
    # A second Ctrl-C while the process winds down should end it at once, not raise again.
    # (ValueError: main() was called outside the main thread, where handlers cannot be set.)
    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
    out.end_line()
    return EXIT_INTERRUPTED


def main(argv: Sequence[str] | None = None) -> int:
    out = Output(sys.stdout)
    try:
        a = _parse(argv)
        return HANDLERS[a.command](a, out)
    except KeyboardInterrupt:
        return _interrupted(out)
    except RealmError as exc:
        out.end_line()
        print(f"realm: error: {one_line(str(exc))}", file=sys.stderr)
        return EXIT_ERROR
    except BrokenPipeError:
        # The reader (`| head`) left: point stdout at nothing so the flush at exit is quiet too.
        with contextlib.suppress(OSError, ValueError):  # ValueError: no real file behind stdout
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
