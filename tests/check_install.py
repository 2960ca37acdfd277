"""Checks that an installed (not editable) realm carries every package and registers its backends.

Run by the nox ``tests`` session from the repository root; it must import the installed copy.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import distribution, entry_points

sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.abspath(".")]

import realm  # noqa: E402

dist = distribution("realm")
assert "site-packages" in realm.__file__, f"realm imported from the source tree: {realm.__file__}"
names = {ep.name: ep.value for ep in entry_points(group="realm.backends")}
required = os.environ.get("REALM_REQUIRE_BACKENDS", "numpy").split(",")
for name in required:
    assert name in names, f"backend {name!r} is not registered by the installed distribution: {names}"
for target in names.values():
    module = importlib.import_module(target.partition(":")[0])
    assert "site-packages" in module.__file__, f"{module.__name__} not installed: {module.__file__}"
print(f"installed realm {dist.version}: backends {sorted(names)}")
