"""Keep numba's on-disk kernel cache consistent with the package's sources.

numba validates a cached kernel only against the file that defines it, not against the
files of the functions it calls: after an edit to a block decoder, a kernel in another
module would load stale machine code. So the package fingerprints all its sources and,
when they changed, drops its cached kernels before any is loaded. Only the in-tree cache
(``__pycache__`` next to the sources, numba's default) is managed this way.
"""

from __future__ import annotations

import hashlib
import pathlib

_STAMP = "realm_numba-sources.sha256"


def drop_stale_kernels(package_dir: pathlib.Path) -> bool:
    """Delete the package's cached kernels if any source changed; True when it did."""
    digest = hashlib.sha256()
    for source in sorted(package_dir.glob("*.py")):
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    cache_dir = package_dir / "__pycache__"
    stamp = cache_dir / _STAMP
    try:
        if stamp.read_text() == digest.hexdigest():
            return False
    except OSError:
        pass
    try:
        for cached in [*cache_dir.glob("*.nbi"), *cache_dir.glob("*.nbc")]:
            cached.unlink(missing_ok=True)
        cache_dir.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only install: numba then caches elsewhere, per file
        return False
    return True
