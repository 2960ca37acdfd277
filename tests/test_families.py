"""qwen2, qwen3, Llama 3.x and gemma3 on synthetic models against llama.cpp's stored outputs.

tests/data/make_family_golden.py wrote each model with `realm.testing.write_model` and ran it
through llama.cpp; here the same arguments write the same file again (checked by sha256) and
realm must reproduce llama.cpp's logits within the golden bounds, on every backend.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import conformance_backend_names, load_backend
from golden import MAX_KL, MIN_COSINE, MIN_GREEDY_AGREEMENT, cosine, kl_divergence

import realm
from realm.gguf.types import GGMLType
from realm.testing import write_model

FAMILIES = Path(__file__).parent / "data" / "families"
CASES = sorted(p.stem for p in FAMILIES.glob("*.npz"))
DEVICES = ["numpy", *conformance_backend_names()]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory):
    """Each case's model written again from its stored arguments, checked against llama.cpp's file."""
    out = {}
    directory = tmp_path_factory.mktemp("families")
    for name in CASES:
        z = np.load(FAMILIES / f"{name}.npz")
        args = json.loads(str(z["args"]))
        args["qtype"] = GGMLType[args["qtype"]]
        path = write_model(directory / f"{name}.gguf", **args)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest == str(z["sha256"]), (
            f"{name}: realm.testing.write_model no longer writes the file llama.cpp ran; "
            "rerun tests/data/make_family_golden.py"
        )
        out[name] = (path, z)
    return out


def test_there_is_a_case_per_family():
    assert {c.split("-")[0] for c in CASES} >= {"qwen2", "qwen3", "llama3", "gemma3"}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", CASES)
def test_logits_match_llama_cpp(model_files, name, device):
    if device != "numpy":
        load_backend(device)
    path, z = model_files[name]
    model = realm.load(path, device=device)
    prompt, ref = z["prompt"].tolist(), z["logits"]
    logits = model.logits(prompt)
    for pos in range(len(prompt)):
        assert cosine(logits[pos], ref[pos]) >= MIN_COSINE, pos
        assert kl_divergence(ref[pos], logits[pos]) <= MAX_KL, pos
    assert int(np.argmax(logits[-1])) == int(np.argmax(ref[-1]))
    # teacher forcing on llama.cpp's greedy continuation
    greedy = z["greedy"].tolist()
    forced = model.logits(prompt + greedy[:-1])[len(prompt) - 1 :].argmax(axis=-1)
    assert float(np.mean(forced == np.asarray(greedy))) >= MIN_GREEDY_AGREEMENT


@pytest.mark.parametrize("name", CASES)
def test_realm_info_shows_architecture_and_hyperparameters(model_files, name):
    path, z = model_files[name]
    args = json.loads(str(z["args"]))
    r = subprocess.run(
        [sys.executable, "-m", "realm", "info", str(path), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["architecture"] == args["arch"]
    assert info["hyperparameters"]["n_layer"] == args["n_layer"]
    if "head_dim" in args:
        assert info["hyperparameters"]["head_dim_k"] == args["head_dim"]
