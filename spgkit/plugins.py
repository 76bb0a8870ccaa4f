"""Plugin discovery: one plugin manager, and the registry of heads and backbones it yields.

Built-in methods (SPG, ACoL) are ordinary plugin distributions under ``plugins/`` discovered through
entry points exactly like a third party's; the core registers only its own backbones and dataset
readers. A plugin can also be one Python file, a researcher's first experiment: ``spgkit run -p
my_head.py`` or ``Study(plugins=("my_head.py",))`` registers its hook implementations beside the
distributions' (:func:`register_file`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import os
import re
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Mapping

import pluggy

from spgkit import backbones, data, hookspecs
from spgkit.config import conforms, type_name

ENTRY_POINT_GROUP = "spgkit"
#: Set to ``1`` to stop :func:`get_plugin_manager` loading entry points (tests register plugins by hand).
AUTOLOAD_ENV = "SPGKIT_DISABLE_PLUGIN_AUTOLOAD"
CORE = "spgkit (core)"
CORE_DATA = "spgkit (core datasets)"


class PluginError(RuntimeError):
    """A plugin failed to load, registered a duplicate name, or a name is unknown."""


class HeadError(PluginError):
    """A guidance head's own code failed or broke the head contract (:mod:`spgkit.heads`): its
    constructor raised something other than an argument error, its ``forward``, ``transform_batch``,
    ``feature_transforms`` or one of its feature transforms raised, or it returned what the contract
    does not allow (not a :class:`~spgkit.heads.HeadOutput`, a loss that is not a 0-d floating-point
    tensor, a map with the wrong number of channels). The message is one line naming the head, the
    plugin that registered it (with its distribution) and the method; so are the attributes."""

    def __init__(self, message: str, head: str = "", plugin: str = "", method: str = ""):
        super().__init__(message)
        self.head, self.plugin, self.method = head, plugin, method

    @classmethod
    def wrap(cls, head: str, plugin: str, method: str, exc: BaseException) -> "HeadError":
        """The error for ``exc`` raised by the head's ``method``."""
        return cls(f"head {head!r} (plugin {plugin!r}) failed in {method}: {one_line(exc)}", head, plugin, method)


class BackboneError(PluginError):
    """A backbone failed to build, or its forward pass failed with an error that is not the
    RuntimeError/AssertionError of an input it cannot take (too small an image). One line naming
    the backbone and the plugin that registered it."""


def one_line(exc: BaseException) -> str:
    """``Type: message`` on one line (whitespace runs collapsed)."""
    message = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def check_hookimpls(pm: pluggy.PluginManager, plugin: object, where: str) -> None:
    """Refuse a plugin with a function named ``spgkit_*`` that pluggy did not take as a hook
    implementation (it lacks ``@spgkit.hookimpl``): it would register nothing and say nothing.
    ``where`` names the plugin (and its distribution) in the message."""
    for attr in sorted(dir(plugin)):
        if not attr.startswith("spgkit_"):
            continue
        try:
            value = getattr(plugin, attr)
        except Exception:  # a property that raises: not a hook
            continue
        if not callable(value) or inspect.isclass(value):
            continue
        if pm.parse_hookimpl_opts(plugin, attr) is None:
            raise PluginError(
                f"{where}: function {attr!r} is not decorated with @spgkit.hookimpl, so spgkit never "
                f"calls it; decorate it with @spgkit.hookimpl (import spgkit first)"
            )


def get_plugin_manager(autoload: bool | None = None) -> pluggy.PluginManager:
    """Build the plugin manager: hookspecs, the core's backbones and readers, and entry-point plugins.

    ``autoload`` defaults to true unless the environment variable ``SPGKIT_DISABLE_PLUGIN_AUTOLOAD``
    is set to a non-empty value other than ``0``. A plugin whose import fails, or that implements
    a hook spgkit does not have (a misspelled name), raises :class:`PluginError` naming the entry
    point and its distribution.
    """
    pm = pluggy.PluginManager("spgkit")
    pm.add_hookspecs(hookspecs)
    pm.register(backbones, name=CORE)
    pm.register(data, name=CORE_DATA)
    if autoload is None:
        autoload = os.environ.get(AUTOLOAD_ENV, "") in ("", "0")
    if autoload:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "unknown distribution"
            try:
                plugin = ep.load()
            except Exception as exc:  # any import-time failure of third-party code
                raise PluginError(
                    f"spgkit plugin {ep.name!r} ({ep.value}) from distribution {dist!r} "
                    f"failed to import: {type(exc).__name__}: {exc}"
                ) from exc
            if pm.is_registered(plugin):
                continue
            try:
                pm.register(plugin, name=f"{ep.name} ({dist})")
            except pluggy.PluginValidationError as exc:
                raise PluginError(f"spgkit plugin {ep.name!r} from distribution {dist!r}: {exc}") from exc
            check_hookimpls(pm, plugin, f"spgkit plugin {ep.name!r} ({ep.value}) from distribution {dist!r}")
    check_pending(pm)
    return pm


def check_pending(pm: pluggy.PluginManager) -> None:
    """Refuse a hook implementation whose name is no spgkit hook (a misspelling), naming its plugin."""
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        known = ", ".join(name for name in dir(hookspecs) if name.startswith("spgkit_"))
        hook = str(exc).split("'")[1] if "'" in str(exc) else str(exc)
        raise PluginError(f"plugin {pm.get_name(exc.plugin)!r} implements unknown hook {hook!r}; spgkit's hooks: {known}") from exc


def _failed_at(path: Path, origin: str, exc: BaseException) -> str:
    """``path:line`` of the line of the file ``path`` that raised ``exc`` (a syntax error's own
    line), or ``path``; ``origin`` is the file's name in code objects (absolute)."""
    line = exc.lineno if isinstance(exc, SyntaxError) and exc.filename == origin else None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == origin:
            line = tb.tb_lineno
        tb = tb.tb_next
    return f"{path}:{line}" if line else str(path)


def import_file(path: Path, module_name: str, error: type[Exception], what: str, plain: tuple[type[Exception], ...] = ()) -> types.ModuleType:
    """Execute the Python file ``path`` as the module ``module_name``, kept in ``sys.modules``
    (dataclasses and pickle look classes up there). Every failure is raised as ``error`` in one
    line naming the file and the line of it that failed, ``path:line: Type: message`` (without the
    type for ``plain`` exceptions, whose messages name their fault); ``what`` is the file's role
    (``study``, ``plugin``)."""
    if not path.is_file():
        raise error(f"{path}: no such {what} file")
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise error(f"{path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses need the module while the file runs
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[module_name]
        message = exc.msg if isinstance(exc, SyntaxError) else " ".join(str(exc).split())
        kind = "" if isinstance(exc, plain) else f"{type(exc).__name__}: "
        raise error(f"{_failed_at(path, spec.origin, exc)}: {kind}{message}") from exc
    return module


def file_plugin_name(path: str | Path) -> str:
    """How a plugin file is named in the manager and in every message: ``file <path>``."""
    return f"file {path}"


def register_file(pm: pluggy.PluginManager, path: str | Path) -> None:
    """Register the hook implementations of the Python file ``path`` (a head in one file) with
    ``pm``, named :func:`file_plugin_name`, as pluggy registers any module. The file is imported
    under a module name of its own (its stem and a hash of its absolute path), so two files
    called ``head.py`` in two folders do not collide; a file already registered is left as it is.
    A missing file, one that fails to import (with the line), or one without any spgkit hook
    implementation raises :class:`PluginError` naming it."""
    path = Path(path)
    name = file_plugin_name(path)
    if pm.get_plugin(name) is not None:
        return
    stem, digest = re.sub(r"\W", "_", path.stem), hashlib.sha256(os.path.abspath(path).encode()).hexdigest()[:12]
    module = import_file(path, f"spgkit_plugin_{stem}_{digest}", PluginError, "plugin")
    try:
        pm.register(module, name=name)
    except pluggy.PluginValidationError as exc:
        raise PluginError(f"{path}: {' '.join(str(exc).split())}") from exc
    check_hookimpls(pm, module, str(path))
    if not pm.get_hookcallers(module):
        raise PluginError(
            f"{path}: no spgkit hook implementation in it; a head file registers its heads with "
            "`@spgkit.hookimpl` on `def spgkit_register_heads(register): register(MyHead)`"
        )
    check_pending(pm)


@dataclass(frozen=True)
class Registered:
    """One registered head or backbone and the plugin that provided it."""

    name: str
    obj: Any
    plugin: str


class Registry:
    """Heads and backbones registered by the plugins of one plugin manager (by default
    :func:`get_plugin_manager`'s), and by the plugin files ``plugins`` (:func:`register_file`),
    which :attr:`plugin_files` keeps as absolute paths: what a worker elsewhere loads to build the
    same registry."""

    def __init__(self, pm: pluggy.PluginManager | None = None, plugins: Sequence[str | Path] = ()):
        self.pm = pm if pm is not None else get_plugin_manager()
        files: dict[str, str | Path] = {}
        for path in plugins:  # one file named twice (-p and the study) counts once
            files.setdefault(os.path.abspath(path), path)
        for path in files.values():
            register_file(self.pm, path)
        self.plugin_files: tuple[str, ...] = tuple(files)
        for plugin_name, plugin in self.pm.list_name_plugin():  # plugins registered by hand too
            check_hookimpls(self.pm, plugin, f"plugin {plugin_name!r}")
        self.heads = self._collect("spgkit_register_heads", "head")
        self.backbones = self._collect("spgkit_register_backbones", "backbone")
        self.datasets = self._collect("spgkit_register_datasets", "dataset")

    def _collect(self, hook_name: str, kind: str) -> dict[str, Registered]:
        found: dict[str, Registered] = {}
        # Call each implementation on its own so that every registration knows its plugin.
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():

            def register(obj: Callable, name: str | None = None, _plugin=impl.plugin_name) -> None:
                if isinstance(obj, str):
                    raise PluginError(f"plugin {_plugin!r} called register({obj!r}, ...): register takes the {kind} first, then its name if it has none")
                key = name or getattr(obj, "name", None)
                if not isinstance(key, str) or not key:
                    raise PluginError(f"plugin {_plugin!r} registered a {kind} without a name: {obj!r}")
                if key in found:
                    raise PluginError(
                        f"{kind} {key!r} is registered twice: by plugin {found[key].plugin!r} "
                        f"and by plugin {_plugin!r}"
                    )
                found[key] = Registered(key, obj, _plugin)

            try:
                impl.function(register=register)
            except PluginError:
                raise
            except Exception as exc:  # third-party code: say whose it is
                raise PluginError(f"plugin {impl.plugin_name!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
        return found

    def head(self, name: str):
        """The head class registered as ``name``."""
        return self._lookup(self.heads, name, "head").obj

    def head_plugin(self, name: str) -> str:
        """The plugin (``"entry point (distribution)"``) that registered the head ``name``."""
        return self._lookup(self.heads, name, "head").plugin

    def backbone_plugin(self, name: str) -> str:
        """The plugin that registered the backbone ``name`` (timm's models: the core)."""
        if name.startswith(backbones.TIMM_PREFIX):
            return f"{CORE}, timm"
        return self._lookup(self.backbones, name, "backbone").plugin

    def backbone(self, name: str):
        """The backbone factory registered as ``name``; ``timm:<model>`` names any timm model
        (:func:`~spgkit.backbones.timm_backbone`)."""
        if name.startswith(backbones.TIMM_PREFIX):
            return backbones.timm_backbone(name.removeprefix(backbones.TIMM_PREFIX))
        return self._lookup(self.backbones, name, "backbone").obj

    def dataset(self, name: str):
        """The dataset reader registered as ``name``."""
        return self._lookup(self.datasets, name, "dataset").obj

    def _lookup(self, table: dict[str, Registered], name: str, kind: str) -> Registered:
        if name in table:
            return table[name]
        known = ", ".join(f"{k} (from {v.plugin})" for k, v in sorted(table.items())) or "none"
        hint = ""
        if os.environ.get(AUTOLOAD_ENV, "") not in ("", "0"):
            hint = f" Plugin autoload is off ({AUTOLOAD_ENV} is set)."
        raise PluginError(
            f"unknown {kind} {name!r}. Known {kind}s: {known}.{hint} A {kind} comes from an "
            f"installed distribution with an entry point in group {ENTRY_POINT_GROUP!r}, or from a "
            f"plugin file (-p FILE, Study.plugins); `spgkit {kind}s` lists them."
        )


def check_arguments(target: Any, args: Mapping[str, Any], what: str, skip: int = 0) -> None:
    """Bind ``args`` by keyword to the signature of ``target`` (its first ``skip`` positional
    parameters given), and check each against its annotation where that is a plain ``bool``,
    ``int``, ``float`` or ``str`` (or one of these or None): ``--set ...colour_cue=maybe`` fails
    here, not silently as a truthy string. A TypeError names ``what``, the argument, and the
    accepted ones or the declared type."""
    signature = inspect.signature(target)
    params = list(signature.parameters.values())
    try:
        signature.bind(*([None] * skip), **args)
    except TypeError as exc:
        accepted = [p.name for p in params[skip:] if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        raise TypeError(f"{what}: {exc}; it takes {', '.join(accepted) or 'no arguments'}") from None
    hints = _annotations(target)
    for name, value in args.items():
        hint = hints.get(name)
        # A float that is not finite is out of range, not of the wrong type: its owner says so.
        out_of_range = isinstance(value, float) and not math.isfinite(value)
        if _is_plain(hint) and not (conforms(value, hint) or out_of_range):
            raise TypeError(f"{what}: argument {name!r} must be {type_name(hint)}, not {value!r}")


def _annotations(target: Any) -> dict[str, Any]:
    # A class's are its __init__'s; annotations that do not resolve (a name imported only for
    # type checkers) leave the arguments unchecked rather than failing the study.
    try:
        return typing.get_type_hints(target.__init__ if inspect.isclass(target) else target)
    except Exception:
        return {}


def _is_plain(hint: Any) -> bool:
    # ``int``, ``float | None`` and the like; any other annotation is left to its owner to check.
    parts = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    return all(part in (bool, int, float, str, type(None)) for part in parts)
