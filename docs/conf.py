"""Sphinx configuration of the spgkit documentation. Build with ``make -C docs html``.

The tutorials under ``tutorials/`` are executed on every build (sphinx-gallery) and a failing one
stops the build. The build reads nothing from the network: no intersphinx, no pretrained weights.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "sphinxext"))

# The docs show the plugins that are installed (the test suite switches discovery off), and never
# download anything.
os.environ["SPGKIT_DISABLE_PLUGIN_AUTOLOAD"] = "0"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import spgkit  # noqa: E402

# -- Project -------------------------------------------------------------------------------------

project = "spgkit"
author = "the spgkit authors"
copyright = "the spgkit authors"
version = release = spgkit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "matplotlib.sphinxext.plot_directive",
    "sphinx_gallery.gen_gallery",
    "spgkit_docs",  # sphinxext/spgkit_docs.py: optional-figure, tutorial order, CLI help
]

exclude_patterns = ["_build", "tutorials/**", "sphinxext/**", "pyplots/**", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []
html_static_path = ["_static"] if (DOCS / "_static").is_dir() else []
default_role = "py:obj"  # `name` links to the object, like :obj:`name`

# -- Theme: pydata-sphinx-theme, or Sphinx's built-in alabaster where it is not installed ------------

try:
    import pydata_sphinx_theme  # noqa: F401

    html_theme = "pydata_sphinx_theme"
    html_theme_options = {
        "navigation_with_keys": False,
        "show_toc_level": 2,
        "secondary_sidebar_items": ["page-toc", "sourcelink"],
    }
except ImportError:
    html_theme = "alabaster"
    html_theme_options = {}
html_title = f"spgkit {release}"
html_show_sourcelink = True

# -- API reference (autodoc + napoleon, Google-style docstrings) -----------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"show-inheritance": True}
autosummary_generate = False  # summary tables only; the entries are written by autodoc on the same page
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# "Attributes:" sections become :ivar: fields rather than attribute entries, so a dataclass field
# that autodoc documents from its "#:" comment is never described twice.
napoleon_use_ivar = True
napoleon_use_rtype = False

# -- The training-step diagram (``.. plot:: pyplots/training_step.py``) ------------------------------

plot_include_source = False
plot_html_show_source_link = False
plot_html_show_formats = False
plot_formats = [("png", 110)]
plot_rcparams = {"font.family": "DejaVu Sans"}

# -- Tutorials: sphinx-gallery ---------------------------------------------------------------------

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",  # every plot_*.py is executed
    "within_subsection_order": "spgkit_docs.TutorialOrder",
    "abort_on_example_error": True,
    "backreferences_dir": "gen_modules/backreferences",
    "doc_module": ("spgkit",),
    "remove_config_comments": True,
    "download_all_examples": False,
    # The global timing page would be written to docs/sg_execution_times.rst, outside the ignored
    # output folders; each tutorial page still reports its own running time.
    "write_computation_times": False,
    "show_signature": False,
    "matplotlib_animations": False,
    "image_srcset": [],
}
