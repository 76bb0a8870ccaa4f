"""Small Sphinx helpers for the spgkit documentation (loaded from conf.py).

- ``optional-figure``: a ``figure`` that is left out, without a warning, when its image file does
  not exist yet (figures that other build steps or study runs put under ``_static/``).
- :class:`TutorialOrder`: the reading order of the tutorials in the gallery.
- ``gen_modules/cli_help.txt``: the ``spgkit`` command's help, regenerated on every build so the
  command-line reference never drifts from the parser.
"""

from __future__ import annotations

import os
from pathlib import Path

from docutils.parsers.rst.directives.images import Figure

#: Tutorial file names in reading order; any other tutorial goes after them, by name.
TUTORIALS = ("plot_localize.py", "plot_custom_head.py", "plot_own_data.py")


class TutorialOrder:
    """sphinx-gallery ``within_subsection_order`` key: :data:`TUTORIALS` first, in that order."""

    def __init__(self, src_dir):
        self.src_dir = src_dir

    def __call__(self, filename) -> str:
        name = os.path.basename(str(filename))
        rank = TUTORIALS.index(name) if name in TUTORIALS else len(TUTORIALS)
        return f"{rank:03d}_{name}"

    def __repr__(self) -> str:  # sphinx-gallery compares configs by repr between builds
        return f"TutorialOrder({TUTORIALS})"


class OptionalFigure(Figure):
    """``.. optional-figure:: path``: a figure, or nothing when ``path`` does not exist."""

    def run(self):
        env = self.state.document.settings.env
        _, absolute = env.relfn2path(self.arguments[0], env.docname)
        if not os.path.isfile(absolute):
            return []
        return super().run()


def write_cli_help(app) -> None:
    """Write the help of ``spgkit`` and of each subcommand to ``gen_modules/cli_help.txt``."""
    import argparse

    from spgkit.cli import build_parser

    parser = build_parser()
    parser.prog = "spgkit"
    parts = [parser.format_help()]
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                parts.append(f"$ spgkit {name} --help\n\n{sub.format_help()}")
    out = Path(app.srcdir) / "gen_modules" / "cli_help.txt"
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n\n".join(parts)
    if not out.exists() or out.read_text() != text:
        out.write_text(text)


def setup(app):
    app.add_directive("optional-figure", OptionalFigure)
    app.connect("builder-inited", write_cli_help)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
