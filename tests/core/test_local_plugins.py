"""A head in one file: ``Registry(plugins=...)``, ``spgkit heads -p FILE``, and the one-line errors."""

import hashlib
import textwrap

import pytest

from spgkit.cli import main
from spgkit.plugins import PluginError, Registry
from spgkit.record import source_fingerprint

HEAD_FILE = '''
"""A head in one file."""
import spgkit
from spgkit.heads import GuidanceHead


class {cls}(GuidanceHead):
    """{doc}"""

    name = "{name}"


@spgkit.hookimpl
def spgkit_register_heads(register):
    register({cls})
'''


def write_head(folder, name="blank", cls="Blank", doc="Adds nothing to CAM.", file="my_head.py"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file
    path.write_text(textwrap.dedent(HEAD_FILE.format(name=name, cls=cls, doc=doc)))
    return path


def test_a_head_file_registers_beside_the_installed_plugins(plugin_manager, tmp_path, monkeypatch):
    path = write_head(tmp_path)
    monkeypatch.chdir(tmp_path)
    registry = Registry(plugin_manager, plugins=["my_head.py"])
    entry = registry.heads["blank"]
    assert entry.plugin == "file my_head.py"
    assert entry.obj.__doc__ == "Adds nothing to CAM."
    assert entry.obj.__module__.startswith("spgkit_plugin_my_head_")
    assert registry.plugin_files == (str(path),)  # absolute: what a Ray worker loads
    assert registry.heads["spg_b"].plugin == "spg (spgkit-spg)"  # the distributions stay
    # Its fingerprint is the file's: its name and bytes, as record.py hashes a module.
    digest = hashlib.sha256(b"my_head.py\0" + path.read_bytes() + b"\0").hexdigest()[:16]
    assert source_fingerprint(entry.obj) == digest


def test_one_file_named_twice_registers_once_and_two_same_named_files_both(plugin_manager, tmp_path, monkeypatch):
    first = write_head(tmp_path / "a")
    second = write_head(tmp_path / "b", name="other", cls="Other")
    monkeypatch.chdir(tmp_path)
    registry = Registry(plugin_manager, plugins=["a/my_head.py", "./a/my_head.py", str(first), "b/my_head.py"])
    assert registry.plugin_files == (str(first), str(second))
    assert {k: v.plugin for k, v in registry.heads.items() if k in ("blank", "other")} == {"blank": "file a/my_head.py", "other": "file b/my_head.py"}
    assert registry.head("blank").__module__ != registry.head("other").__module__


@pytest.mark.parametrize(
    "text, message",
    [
        (None, "{path}: no such plugin file"),
        ("import spgkit\n\ndef f(:\n", "{path}:3: SyntaxError: invalid syntax"),
        ("import spgkit\nx = 1\nraise RuntimeError('no\\n  GPU')\n", "{path}:3: RuntimeError: no GPU"),
        ("import spgkit\nx = 1\n", "{path}: no spgkit hook implementation in it; a head file registers its heads with "
         "`@spgkit.hookimpl` on `def spgkit_register_heads(register): register(MyHead)`"),
        ("def spgkit_register_heads(register):\n    pass\n", "{path}: function 'spgkit_register_heads' is not decorated with @spgkit.hookimpl"),
        ("import spgkit\n@spgkit.hookimpl\ndef spgkit_register_head(register):\n    pass\n", "plugin 'file {path}' implements unknown hook 'spgkit_register_head'"),
    ],
)  # fmt: skip
def test_a_bad_head_file_is_one_line_naming_it(tmp_path, monkeypatch, capsys, text, message):
    monkeypatch.chdir(tmp_path)
    if text is not None:
        (tmp_path / "head.py").write_text(text)
    assert main(["heads", "-p", "head.py"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spgkit heads: error: " + message.format(path="head.py")) and err.count("\n") == 1


def test_a_name_clash_with_an_installed_head_names_both(plugin_manager, tmp_path):
    path = write_head(tmp_path, name="spg_b")
    with pytest.raises(PluginError, match=rf"head 'spg_b' is registered twice: by plugin .* and by plugin .*") as caught:
        Registry(plugin_manager, plugins=[path])
    assert "'spg (spgkit-spg)'" in str(caught.value) and f"'file {path}'" in str(caught.value)


def test_spgkit_heads_lists_a_head_file_with_its_source(tmp_path, monkeypatch, capsys):
    write_head(tmp_path)
    monkeypatch.chdir(tmp_path)
    assert main(["heads", "-p", "my_head.py"]) == 0
    assert capsys.readouterr().out == "blank  from file my_head.py  -- Adds nothing to CAM.\n"  # autoload is off in tests
