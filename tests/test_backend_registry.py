"""Device strings, backend discovery and the errors for backends that are not there."""

from __future__ import annotations

import pytest

import realm
from realm import backend as registry
from realm.backend import Availability, BackendEntry, DeviceSpec, parse_device
from realm.errors import BackendUnavailableError


@pytest.mark.parametrize(
    "text, spec",
    [
        ("cpu", DeviceSpec("cpu")),
        ("numpy", DeviceSpec("numpy")),
        ("auto", DeviceSpec("auto")),
        ("cuda", DeviceSpec("cuda")),
        ("cuda:1", DeviceSpec("cuda", (1,))),
        ("opencl", DeviceSpec("opencl")),
        ("opencl:0:1", DeviceSpec("opencl", (0, 1))),
        (" CUDA:0 ", DeviceSpec("cuda", (0,))),
    ],
)
def test_parse_device(text, spec):
    assert parse_device(text) == spec


@pytest.mark.parametrize("text", ["", "cuda:", "cuda:x", "opencl::1", "gpu-1", ":0", 3, None])
def test_bad_device_strings(text):
    with pytest.raises(BackendUnavailableError):
        parse_device(text)


def test_numpy_backend_is_listed_and_available():
    status = {b.name: b for b in realm.backends()}
    assert status["numpy"].available
    assert status["numpy"].devices[0].device == "numpy"


def test_unknown_backend_names_what_is_registered():
    with pytest.raises(BackendUnavailableError, match="registered"):
        realm.get_backend("tpu")


class _Absent:
    name = "fake"

    @classmethod
    def probe(cls):
        return Availability(False, reason="no fake device was found")


@pytest.fixture
def fake_registry(monkeypatch):
    entries = dict(registry._registry())

    def add(name, target, cls=None):
        entry = BackendEntry(name, target)
        entry._cls = cls
        entries[name] = entry

    monkeypatch.setattr(registry, "_registry", lambda: entries)
    return add


def test_unavailable_backend_says_why_and_how_to_fix(fake_registry):
    fake_registry("opencl", "nowhere:Fake", _Absent)
    with pytest.raises(BackendUnavailableError) as exc:
        realm.get_backend("opencl:0:0")
    assert "no fake device was found" in str(exc.value)
    assert "pip install" in str(exc.value)


def test_broken_plugin_is_a_warning_not_a_crash(fake_registry):
    fake_registry("broken", "realm_no_such_module:Backend")
    with pytest.warns(UserWarning, match="broken"):
        status = {b.name: b for b in realm.backends()}
    assert not status["broken"].available
    assert "failed to load" in status["broken"].reason
    assert status["numpy"].available


def test_auto_skips_unavailable_backends(fake_registry):
    fake_registry("cuda", "nowhere:Fake", _Absent)
    entry, spec = registry.resolve_device("auto")
    assert spec.backend in ("opencl", "cpu", "numpy")
    assert entry.availability().available
