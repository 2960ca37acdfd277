"""The docs against the code: every public name documented, every link alive, every example valid.

These read README.md and docs/*.md as text and check them against `realm` as it is imported,
so a public name added without docs, a renamed function, a moved page or a broken example
fails here instead of on a new user's first try.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

import realm
import realm.errors

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
API = ROOT / "docs" / "api.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(r"^(```|~~~)(?P<lang>[^\n]*)\n(?P<body>.*?)^\1[ \t]*$", re.S | re.M)
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_LINK = re.compile(r"!?\[[^\]]*\]\((?P<target><[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\)")
_REF_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s+(?P<target>\S+)", re.M)
_REALM_NAME = re.compile(r"\brealm(?:\.[A-Za-z_]\w*)+")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def _code_blocks(text: str, lang: str | None = None) -> list[str]:
    return [
        m.group("body") for m in _FENCE.finditer(text) if lang is None or m.group("lang").strip() == lang
    ]


def _prose(text: str) -> str:
    """The text outside code blocks and inline code, where links are links."""
    return _INLINE_CODE.sub("", _FENCE.sub("", text))


def _code_text(text: str) -> str:
    """Everything written as code: fenced blocks and inline spans."""
    return "\n".join(_code_blocks(text) + [m.group(0) for m in _INLINE_CODE.finditer(_FENCE.sub("", text))])


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|<[^>]+>", "", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    anchors = set()
    for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", _FENCE.sub("", page.read_text(encoding="utf-8")), re.M):
        slug = _slug(m.group(1))
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _resolve(dotted: str) -> object:
    """The object ``realm.a.b`` names, importing submodules on the way; AttributeError if none."""
    parts = dotted.split(".")
    obj: object = importlib.import_module(parts[0])
    for i, part in enumerate(parts[1:], start=1):
        if hasattr(obj, part):
            obj = getattr(obj, part)
            continue
        try:
            obj = importlib.import_module(".".join(parts[: i + 1]))
        except ModuleNotFoundError:
            raise AttributeError(f"{'.'.join(parts[:i])} has no attribute {part!r}") from None
    return obj


# ----------------------------------------------------------------------------- api.md


@pytest.mark.parametrize("name", realm.__all__)
def test_every_public_name_is_in_the_api_reference(name):
    code = _code_text(API.read_text(encoding="utf-8"))
    assert re.search(rf"(?<![\w.])(realm\.)?{re.escape(name)}\b", code), (
        f"realm.{name} is public (realm.__all__) but docs/api.md never names it in code; document it"
    )


def _error_classes() -> list[str]:
    return sorted(
        name
        for name, obj in vars(realm.errors).items()
        if inspect.isclass(obj) and issubclass(obj, realm.errors.RealmError)
    )


@pytest.mark.parametrize("name", _error_classes())
def test_every_error_class_is_in_the_api_reference(name):
    code = _code_text(API.read_text(encoding="utf-8"))
    assert re.search(rf"\b{re.escape(name)}\b", code), (
        f"realm.errors.{name} is not described in docs/api.md's error table"
    )


# ----------------------------------------------------------------------------- links


def _links() -> list[tuple[str, str]]:
    out = []
    for page in PAGES:
        prose = _prose(page.read_text(encoding="utf-8"))
        for m in [*_LINK.finditer(prose), *_REF_LINK.finditer(prose)]:
            out.append((_rel(page), m.group("target").strip("<>")))
    return out


def test_the_pages_have_links():
    assert any(target.startswith("docs/api.md") for page, target in _links() if page == "README.md")


@pytest.mark.parametrize(("page", "target"), _links())
def test_relative_links_point_to_files_that_exist(page, target):
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto: ...
        return
    path_part, _, anchor = target.partition("#")
    source = ROOT / page
    dest = (source.parent / path_part).resolve() if path_part else source
    assert dest.exists(), f"{page} links to {target!r}, but {_rel(dest)} does not exist"
    if anchor and dest.suffix == ".md":
        assert anchor in _anchors(dest), (
            f"{page} links to {target!r}, but {_rel(dest)} has no heading with that anchor"
        )


# ----------------------------------------------------------------------------- examples


def _python_blocks() -> list:
    blocks = []
    for page in PAGES:
        for i, body in enumerate(_code_blocks(page.read_text(encoding="utf-8"), "python")):
            blocks.append(pytest.param(_rel(page), i, body, id=f"{_rel(page)}:{i + 1}"))
    return blocks


def test_the_readme_has_python_examples():
    assert sum(p.values[0] == "README.md" for p in _python_blocks()) >= 2


@pytest.mark.parametrize(("page", "index", "code"), _python_blocks())
def test_python_examples_compile_and_use_names_that_exist(page, index, code):
    where = f"{page}, python block {index + 1}"
    tree = ast.parse(compile(code, where, "exec", flags=ast.PyCF_ONLY_AST))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "realm":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{where}: `from {node.module} import {alias.name}` fails"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "realm":
                    importlib.import_module(alias.name)
    for dotted in sorted(set(_REALM_NAME.findall(code))):
        try:
            _resolve(dotted)
        except AttributeError as exc:
            pytest.fail(f"{where} uses {dotted}, which does not exist: {exc}")


@pytest.mark.parametrize("page", [README, API], ids=_rel)
def test_realm_names_in_the_text_exist(page):
    """``realm.something`` written in the prose's code spans names something real."""
    text = page.read_text(encoding="utf-8")
    spans = [m.group(0) for m in _INLINE_CODE.finditer(_FENCE.sub("", text))]
    missing = []
    for dotted in sorted({n for span in spans for n in _REALM_NAME.findall(span)}):
        try:
            _resolve(dotted)
        except AttributeError as exc:
            missing.append(f"{dotted} ({exc})")
    assert not missing, f"{_rel(page)} names things that do not exist: {missing}"
