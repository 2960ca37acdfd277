"""Time opening a GGUF file: realm.gguf.read_gguf against gguf.GGUFReader.

    python benchmarks/bench_load.py [--repeat N] [extra.gguf ...]

Prints, per model, the best of N wall-clock times of: read_gguf (header parsed, data
mapped), read_gguf(tensors_data=False) (header only) and gguf.GGUFReader, and the
ratio GGUFReader / read_gguf. Models that are not installed are skipped with a note.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import pathlib
import platform
import sys
from collections.abc import Callable

import gguf

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from benchmarks.timing import best_of  # noqa: E402
from realm.errors import ModelNotFoundError  # noqa: E402
from realm.gguf import read_gguf  # noqa: E402
from realm.models_on_pypi import gemma3_path, smollm2_path  # noqa: E402


def _installed(find: Callable[[], pathlib.Path]) -> Callable[[], pathlib.Path | None]:
    def path() -> pathlib.Path | None:
        try:
            return find()
        except ModelNotFoundError:
            return None

    return path


MODELS: dict[str, Callable[[], pathlib.Path | None]] = {
    "SmolLM2-135M Q4_1": _installed(smollm2_path),
    "gemma-3-270m Q4_K_M": _installed(gemma3_path),
}


def loaders(path: pathlib.Path) -> dict[str, Callable[[], object]]:
    return {
        "realm read_gguf": lambda: read_gguf(path).close(),
        "realm header-only": lambda: read_gguf(path, tensors_data=False).close(),
        "gguf.GGUFReader": lambda: gguf.GGUFReader(path),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per loader (best kept)")
    parser.add_argument("extra", nargs="*", type=pathlib.Path, help="more GGUF files to time")
    args = parser.parse_args(argv)

    models = {name: find() for name, find in MODELS.items()}
    models.update({path.name: path for path in args.extra})
    print(
        f"# {platform.machine()}, {platform.python_implementation()} {platform.python_version()}, "
        f"gguf {importlib.metadata.version('gguf')}, best of {args.repeat}"
    )
    header = f"{'model':<22} {'MB':>6} " + " ".join(f"{n:>18}" for n in loaders(pathlib.Path()))
    print(header + f" {'GGUFReader/realm':>17}")
    for name, path in models.items():
        if path is None or not path.exists():
            print(f"{name:<22} not installed, skipped")
            continue
        times = {label: best_of(args.repeat, load) for label, load in loaders(path).items()}
        size_mb = path.stat().st_size / 1e6
        cells = " ".join(f"{t * 1e3:>15.1f} ms" for t in times.values())
        ratio = times["gguf.GGUFReader"] / times["realm read_gguf"]
        print(f"{name:<22} {size_mb:>6.0f} {cells} {ratio:>16.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
