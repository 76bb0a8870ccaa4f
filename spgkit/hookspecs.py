"""Every hook a spgkit plugin can implement.

Hooks only *register* things; they never run model code. A plugin is any module or object with
functions marked ``@spgkit.hookimpl`` whose names match the specs below, exposed to spgkit through
an entry point in the ``spgkit`` group of its distribution::

    # pyproject.toml of your plugin distribution
    [project.entry-points.spgkit]
    my_method = "my_package"

    # my_package/__init__.py
    import spgkit

    @spgkit.hookimpl
    def spgkit_register_heads(register):
        register(MyHead)

A function named ``spgkit_*`` without ``@spgkit.hookimpl`` would be ignored by pluggy, so the plugin
would register nothing; spgkit refuses such a plugin with a :class:`spgkit.plugins.PluginError`
naming it and the function. A decorated function whose name is not a hook below (a misspelling)
is refused the same way.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("spgkit")
hookimpl = pluggy.HookimplMarker("spgkit")


@hookspec
def spgkit_register_heads(register):
    """Register guidance heads.

    Called once per plugin when a :class:`spgkit.plugins.Registry` is built. Call
    ``register(HeadClass)`` for each :class:`spgkit.heads.GuidanceHead` subclass the plugin
    provides; the head's ``name`` class attribute is the name studies use. Registering a name that
    another plugin already registered raises :class:`spgkit.plugins.PluginError` naming both
    plugins. Return value is ignored.
    """


@hookspec
def spgkit_register_backbones(register):
    """Register attention backbones.

    Called once per plugin when a :class:`spgkit.plugins.Registry` is built. Call
    ``register(factory, name="my_backbone")`` for each backbone; ``factory(**kwargs)`` must return
    an :class:`spgkit.backbones.AttentionBackbone`. ``name`` defaults to ``factory.name``.
    Duplicate names raise :class:`spgkit.plugins.PluginError` naming both plugins. Return value
    is ignored.
    """


@hookspec
def spgkit_register_datasets(register):
    """Register dataset readers.

    Called once per plugin when a :class:`spgkit.plugins.Registry` is built. Call
    ``register(reader, name="my_format")`` for each reader: ``reader(split=..., transform=...,
    **args)`` must return a dataset of :class:`spgkit.data.Sample` dicts with ``num_classes`` and
    ``class_names`` (see :mod:`spgkit.data`); a reader may offer metrics of its own annotations as
    its ``diagnostics`` (:mod:`spgkit.data.diagnostics`). Duplicate names raise
    :class:`spgkit.plugins.PluginError` naming both plugins. Return value is ignored.
    """
