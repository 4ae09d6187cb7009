"""Sphinx configuration for fastgrad's documentation site.

Build (what CI's ``docs`` job runs, from an installed fastgrad):

    pip install ".[docs]"
    python -m sphinx -W --keep-going -n -b html docs docs/_build/html

Tutorials are MyST Markdown notebooks (``docs/tutorials/*.md``) that MyST-NB
executes at build time; a cell that raises fails the build.  The API reference
is autodoc over the public modules (signatures of compiled functions are read
from the ``.pyi`` stubs); ``_ext/fastgrad_api.py`` fails the build when a
public name is missing from the reference or has no docstring.  Nothing is
fetched from the network (no intersphinx).
"""
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
# the notebooks run in scratch directories; data files are found through this
os.environ["FASTGRAD_DOCS_SRC"] = str(HERE)

import fastgrad  # noqa: E402  (the installed package, compiled build expected)

project = "fastgrad"
author = "The fastgrad developers"
copyright = "2026, the fastgrad developers"
release = fastgrad.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_nb",                    # MyST Markdown + executed notebooks
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "numpydoc",                   # numpydoc docstrings (types in prose are text)
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",     # MathJax copied into _static: the site works offline
    "sphinx.ext.viewcode",
    "fastgrad_api",               # public-name coverage, .pyi signatures, alias refs
]

source_suffix = {".md": "myst-nb", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints",
                    "_data/README.md"]
root_doc = "index"

# -- warnings are errors (-W on the command line); every reference must resolve
nitpicky = True
# Types named in prose inside numpydoc "Parameters" sections ("sequence of
# Value", "array_like") and names of other projects (no intersphinx: the build
# is offline) are not cross-references.
nitpick_ignore_regex = [
    # private helpers named in signatures (protocols, type aliases)
    (r"py:.*", r"fastgrad\.(\w+\.)*_\w+"),
    (r"py:mod", r"(pickle|copy|concurrent\.futures|multiprocessing)"),
    (r"py:.*", r"(numpy|np|npt|concurrent|collections|multiprocessing|threading|"
               r"distributed|dask|torch|graphviz|matplotlib|sklearn|tqdm|onnx|"
               r"onnxruntime|contextlib|pathlib|os|types|random|typing_extensions|"
               r"_typeshed|typing|builtins)(\..*)?"),
    (r"py:.*", r"(sequence|iterable|mapping|callable|array|array_like|array-like|"
               r"ndarray|list|tuple|dict|set|int|float|str|bool|number|numbers|object|"
               r"optional|default|of|or|and|shape|Real|Any|Iterable|Sequence|Mapping|"
               r"Callable|Iterator|Generator|Literal|Union|Optional|Protocol|"
               r"Executor|Future|Path|PathLike|SupportsFloat|F64|Array|Inputs|"
               r"ArrayLike|NDArray|float64|Seed|Config|Func|T|_.*|"
               r"positive|non-negative|nonnegative|None|True|False|\"mean\"|\"sum\"|"
               r"'mean'|'sum'|\"central\"|\"forward\"|\"raise\"|\"keep\"|\.\.\.)"),
]

# -- MyST / MyST-NB ----------------------------------------------------------
myst_enable_extensions = ["colon_fence", "dollarmath", "amsmath", "deflist"]
myst_heading_anchors = 3
# Every tutorial runs at every build (FASTGRAD_DOCS_EXECUTE=cache reuses
# outputs of unchanged notebooks from docs/_build/.jupyter_cache while editing
# prose; CI always executes).
nb_execution_mode = os.environ.get("FASTGRAD_DOCS_EXECUTE", "force")
nb_execution_cache_path = str(HERE / "_build" / ".jupyter_cache")
nb_execution_raise_on_error = True       # a cell that raises fails the build
nb_execution_show_tb = True              # ... and its traceback is in the log
nb_execution_timeout = 600
nb_execution_in_temp = True              # cells run in a scratch directory
nb_merge_streams = True
nb_render_markdown_format = "myst"       # Markdown outputs (the benchmark tables) as MyST
nb_output_stderr = "show"

# -- autodoc -----------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"show-inheritance": False}
autosummary_generate = False
numpydoc_show_class_members = False     # autodoc lists the members itself
numpydoc_xref_param_type = False        # "sequence of Value" is prose, not a reference
numpydoc_attributes_as_param_list = True

# -- HTML --------------------------------------------------------------------
html_theme = "furo"
html_title = f"fastgrad {release}"
html_static_path = ["_static"]
html_css_files = ["fastgrad.css"]
html_last_updated_fmt = None
html_show_sourcelink = False
html_theme_options = {
    "source_repository": "https://github.com/fastgrad/fastgrad",
    "source_branch": "main",
    "source_directory": "docs/",
}
pygments_style = "friendly"
pygments_dark_style = "monokai"
