"""Keep numba's on-disk kernel cache usable and consistent with the package's sources.

Where numba caches (numba's own rules, first that works): ``$NUMBA_CACHE_DIR/<dir>_<hash>``
when that variable is set; ``__pycache__`` next to the sources when it is writable (a
clone, an editable install); otherwise the user's cache, ``~/.cache/numba/<dir>_<hash>``
(``$XDG_CACHE_HOME``), e.g. for a package installed into a read-only site-packages. When
none of them is writable numba refuses to import a ``cache=True`` function at all, so
`ensure_cache_location` then points numba at a directory under the system temp dir.

numba validates a cached kernel only against the file that defines it, not against the
files of the functions it calls: after an edit (or an upgrade) that changes a block
decoder, a kernel in another module would load stale machine code. So the package
fingerprints its kernel sources (the modules that define compiled functions) and, when
they changed, drops its cached kernels before any is loaded (`drop_stale_kernels`), in
whichever of those directories numba uses. Editing the Python-side modules (the backend
class, this file) keeps the cache: they are not compiled.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import tempfile

_STAMP = "realm_numba-sources.sha256"
# A module with a decorator line like these (at any indentation: intrinsics are made by
# functions) defines compiled functions; one that imports llvmlite writes their IR; one
# marked so (formats.py) writes the source of some.
_COMPILED = re.compile(
    rb"^[ \t]*@(njit|intrinsic|overload)\b|^from llvmlite\b|^# kernel source:", re.MULTILINE
)


def _writable(directory: pathlib.Path) -> bool:
    """numba's own test: the directory can be created and a file written in it."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=directory).close()
    except OSError:
        return False
    return True


def ensure_cache_location(package_dir: pathlib.Path) -> None:
    """Give numba a writable cache directory when it would find none (before kernels import)."""
    from numba.core import config

    if config.CACHE_DIR or _writable(package_dir / "__pycache__"):
        return
    from numba.misc.appdirs import AppDirs

    if _writable(pathlib.Path(AppDirs(appname="numba", appauthor=False).user_cache_dir)):
        return
    uid = os.getuid() if hasattr(os, "getuid") else 0
    config.CACHE_DIR = os.path.join(tempfile.gettempdir(), f"realm-numba-cache-{uid}")


def kernel_cache_dir(dispatcher: object, package_dir: pathlib.Path) -> pathlib.Path:
    """The directory numba caches `dispatcher` (a ``cache=True`` kernel of the package) in."""
    path = getattr(getattr(dispatcher, "_cache", None), "cache_path", None)
    return pathlib.Path(path) if path else package_dir / "__pycache__"


def drop_stale_kernels(package_dir: pathlib.Path, cache_dir: pathlib.Path | None = None) -> bool:
    """Delete the package's cached kernels in `cache_dir` if any source changed; True when it did."""
    digest = hashlib.sha256()
    for source in sorted(package_dir.glob("*.py")):
        text = source.read_bytes()
        if _COMPILED.search(text):  # only compiled code reaches the cache
            digest.update(source.name.encode() + b"\0" + text)
    cache_dir = cache_dir or package_dir / "__pycache__"
    stamp = cache_dir / _STAMP
    try:
        if stamp.read_text() == digest.hexdigest():
            return False
    except OSError:
        pass
    try:
        for cached in [*cache_dir.glob("*.nbi"), *cache_dir.glob("*.nbc")]:
            cached.unlink(missing_ok=True)
        cache_dir.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # not writable after all: numba then does not cache here either
        return False
    return True
