"""Shared fixtures: the numpy reference backend, the backends under conformance test, seeds.

Which backends are tested: every registered backend (entry-point group ``realm.backends``)
except the reference itself, plus every name in ``REALM_REQUIRE_BACKENDS``. A backend
named there (a comma list, e.g. ``"numpy,cpu,opencl"``, set by CI) that is missing or
unavailable makes its tests fail; any other unavailable backend is skipped with the
reason its probe gave.
"""

from __future__ import annotations

import os
import zlib

# One BLAS thread for the numpy reference: on a small, busy machine OpenBLAS's spinning
# worker threads make each small matmul up to 100x slower (a SmolLM2 decode step goes from
# ~0.3 s to ~2.5 s). Set before numpy loads OpenBLAS; an explicit setting wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from realm.backend import registered_backends  # noqa: E402

REQUIRE_ENV = "REALM_REQUIRE_BACKENDS"
REFERENCE = "numpy"


def required_backends() -> frozenset[str]:
    """Backend names that must be registered and available (from $REALM_REQUIRE_BACKENDS)."""
    return frozenset(n.strip().lower() for n in os.environ.get(REQUIRE_ENV, "").split(",")
                     if n.strip())


def conformance_backend_names() -> list[str]:
    """Every backend the conformance suite runs against: all but the reference."""
    return sorted((set(registered_backends()) | required_backends()) - {REFERENCE})


def _backend_params() -> list:
    names = conformance_backend_names()
    if names:
        return names
    reason = f"no backend other than {REFERENCE!r} is registered"
    return [pytest.param(None, id="none", marks=pytest.mark.skip(reason=reason))]


def load_backend(name: str):
    """Instantiate a registered backend; fail if `name` is required, skip otherwise."""
    required = name in required_backends()
    entry = registered_backends().get(name)
    if entry is None:
        message = f"backend {name!r} is not registered (registered: {sorted(registered_backends())})"
    else:
        availability = entry.availability()
        if availability.available:
            return entry.load_class()(device=name)
        message = f"backend {name!r} is not available: {availability.reason}"
    if required:
        pytest.fail(f"{message}; it is listed in ${REQUIRE_ENV}", pytrace=False)
    pytest.skip(message)


@pytest.fixture(scope="session")
def reference():
    """The numpy reference backend (the oracle), used directly rather than through the registry."""
    from realm_numpy import NumpyBackend

    return NumpyBackend()


@pytest.fixture(scope="session", params=_backend_params())
def backend(request):
    """Each backend under conformance test, by name."""
    return load_backend(request.param)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's id: fresh inputs per case, reproducible per run."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A live realm server (tests/server_harness.py) for the module's tests."""
    from server_harness import start_served, stop_served

    live = start_served(tmp_path_factory)
    yield live
    stop_served(live)
