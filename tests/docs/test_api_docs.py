"""The API reference covers the plugin contract: every hook and every built-in head is documented.

These read the reStructuredText sources under ``docs/`` and import what they name; they need no
Sphinx, so a renamed function or a new hook without a page fails here, before a docs build.
"""

import importlib
import inspect
import re
from pathlib import Path

import pytest

import spgkit.hookspecs

DOCS = Path(__file__).resolve().parents[2] / "docs"
DIRECTIVE = re.compile(r"^\.\. (auto\w+|py:\w+):: (\S+)", re.MULTILINE)


def api_sources() -> dict[str, str]:
    sources = {path.name: path.read_text() for path in sorted(DOCS.glob("api*.rst"))}
    assert "api.rst" in sources, "docs/api.rst (the API reference's index) is missing"
    return sources


def documented_names() -> dict[str, str]:
    """Fully qualified names given to autodoc/py directives in the API sources -> directive."""
    return {name: kind for text in api_sources().values() for kind, name in DIRECTIVE.findall(text)}


def hookspecs() -> dict[str, object]:
    specs = {
        name: func
        for name, func in inspect.getmembers(spgkit.hookspecs, inspect.isfunction)
        if hasattr(func, "spgkit_spec")  # what pluggy's HookspecMarker("spgkit") sets
    }
    assert "spgkit_register_heads" in specs and "spgkit_register_backbones" in specs
    return specs


def resolve(name: str):
    """Import ``package.module.Object.attr`` the way autodoc does: longest importable module first."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(name)


@pytest.mark.parametrize("name", sorted(hookspecs()))
def test_every_hookspec_has_a_docstring_that_says_when_it_is_called(name):
    doc = inspect.getdoc(hookspecs()[name]) or ""
    assert len(doc.split()) >= 15, f"hookspec {name} needs a real docstring, has {doc!r}"
    assert "called" in doc.lower(), f"the docstring of {name} should say when the hook is called"
    assert "return" in doc.lower(), f"the docstring of {name} should say what it may return"


@pytest.mark.parametrize("name", sorted(hookspecs()))
def test_every_hookspec_is_in_the_api_reference(name):
    assert documented_names().get(f"spgkit.hookspecs.{name}") == "autofunction", (
        f"docs/api*.rst has no '.. autofunction:: spgkit.hookspecs.{name}'"
    )


def test_every_builtin_head_is_in_the_api_reference(registry):
    names = documented_names()
    text = "\n".join(api_sources().values())
    assert set(registry.heads) >= {"spg_b", "spg_c", "acol"}
    for head, entry in registry.heads.items():
        cls = entry.obj
        qualified = f"{cls.__module__}.{cls.__qualname__}"
        assert names.get(qualified) == "autoclass", f"head {head!r}: no '.. autoclass:: {qualified}' in docs/api*.rst"
        assert f"``{head}``" in text, f"head {head!r}: its registry name does not appear in docs/api*.rst"
        # The hook implementation that registers it is documented beside it.
        module = importlib.import_module(cls.__module__)
        assert hasattr(module, "spgkit_register_heads")
        assert names.get(f"{cls.__module__}.spgkit_register_heads") == "autofunction"


def test_the_reference_covers_every_core_module():
    modules = {name for name, kind in documented_names().items() if kind == "automodule"}
    core = {
        "spgkit.hookspecs", "spgkit.plugins", "spgkit.backbones", "spgkit.heads", "spgkit.model",
        "spgkit.guidance", "spgkit.localization", "spgkit.data", "spgkit.study", "spgkit.train",
        "spgkit.report", "spgkit.figures", "spgkit.cli", "spgkit.io", "spgkit_spg", "spgkit_acol", "spgkit_has", "spgkit_adl", "spgkit_cutmix", "spgkit_tscam", "spgkit.config",
        "spgkit.runs", "spgkit.evaluate", "spgkit.distributed", "spgkit.init",
    }  # fmt: skip
    assert core <= modules, f"no automodule for {sorted(core - modules)}"


def test_every_documented_name_exists():
    # A name autodoc cannot import is only a warning in Sphinx; here it is a failure.
    missing = []
    for name in documented_names():
        try:
            resolve(name)
        except (ImportError, AttributeError):
            missing.append(name)
    assert missing == []


def test_summary_tables_name_existing_objects():
    missing = []
    for text in api_sources().values():
        module = None
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if line.startswith(".. automodule:: "):
                module = line.split("::", 1)[1].strip()
            if line.startswith(".. autosummary::"):
                for item in lines[i + 1 :]:
                    if item and not item.startswith(" "):
                        break
                    if item.strip() and not item.strip().startswith(":"):
                        try:
                            resolve(f"{module}.{item.strip()}")
                        except (ImportError, AttributeError):
                            missing.append(f"{module}.{item.strip()}")
    assert missing == []
