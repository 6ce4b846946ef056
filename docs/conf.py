"""Sphinx configuration of the maskcls-hpo docs (``make docs``: ``sphinx-build -W --keep-going``).

Pages are Markdown (MyST); the API reference comes from the docstrings (autodoc + napoleon, Google-style
sections). ``nitpicky`` is on, so a docstring role that names a function or class that no longer exists fails
the build; names of other libraries (Optuna, torch, NumPy, ...) are not documented here and are ignored by
package (``nitpick_ignore_regex``). No page fetches anything: no intersphinx, so the build runs offline.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, also without an install (Read the Docs, worktrees)

project = "maskcls-hpo"
author = "the maskcls-hpo team"
copyright = "the maskcls-hpo team"  # noqa: A001 - Sphinx's name

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [text](page.md#a-heading) links to headings down to ###

# The heavy training libraries are mocked where they are not installed (docs/requirements.txt, which Read the
# Docs installs, leaves them out: no GPU wheels for a docs build). With them installed, as in the project's venv
# and CI, autodoc imports the real modules.
autodoc_mock_imports = [name for name in ("torch", "torchvision", "timm") if importlib.util.find_spec(name) is None]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_inherit_docstrings = False  # torch's nn.Module.forward docstring is not ours
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_class_signature = "separated"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

nitpicky = True
# Other libraries' names in signatures and docstrings: not documented here.
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(optuna|optuna_dashboard|torch|torchvision|timm|numpy|np|pandas|pd|sklearn|pydantic|typer|rich|"
        r"sqlalchemy|mlflow|matplotlib|plotly|yaml|PIL|wsgiref|logging|threading|subprocess|concurrent|collections|"
        r"typing|typing_extensions|pathlib|os|io|json|datetime|enum|dataclasses|contextlib|types|signal|socket|"
        r"argparse|abc|click|importlib|huggingface_hub|tensorboard)(\..*)?",
    ),
    (r"py:.*", r"RDBStorage"),  # Optuna's, named short in the storage docstrings
    # builtins and typing names as they appear in annotations
    (
        r"py:.*",
        r"(Any|Callable|Iterable|Iterator|Mapping|Sequence|Literal|Self|Path|PathLike|TextIO|Generator|"
        r"TypeVar|Protocol|Optional|Union|NoneType|Ellipsis|T|_T|IntLike|BaseHeartbeatThread|WSGIApplication|"
        r"maskcls_hpo\..*\._T)",
    ),
]


def _current_module(app) -> str:
    """The module autodoc is documenting members of (Sphinx >= 8.2 keeps it on ``env.current_document``)."""
    doc = getattr(app.env, "current_document", None)
    return getattr(doc, "autodoc_module", "") or app.env.temp_data.get("autodoc:module", "")


def _public(module: str) -> bool:
    return module.startswith("maskcls_hpo") and not any(part.startswith("_") for part in module.split("."))


def _through_lazy(target: str) -> str:
    """Where a lazily re-exported name lives: maskcls_hpo.run_sweep -> the module its package's _LAZY names."""
    import importlib

    for _ in range(5):  # maskcls_hpo -> maskcls_hpo.hpo -> maskcls_hpo.hpo.launch at most
        head, _, name = target.rpartition(".")
        try:
            lazy = getattr(importlib.import_module(head), "_LAZY", {}) if head.startswith("maskcls_hpo") else {}
        except ImportError:
            return target
        if name not in lazy:
            return target
        target = f"{lazy[name]}.{name}"
    return target


def _home_of(target: str) -> str | None:
    """maskcls_hpo.MaskclsError -> maskcls_hpo.errors.MaskclsError: the module that defines a re-exported name."""
    import importlib

    head, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(head), name)
    except (ImportError, AttributeError):
        return None
    home = getattr(obj, "__module__", None)
    return f"{home}.{name}" if isinstance(home, str) else None


def _defined_in(module: str | None, target: str) -> bool:
    """Whether `target` (``NAME`` or ``mod.NAME``) is an attribute of `module` or, for a package, of one of its
    private modules (the docstrings of ``store/_rdb.py`` are shown under ``store``)."""
    import importlib

    if not module:
        return False
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    owners = [m for name, m in sorted(sys.modules.items()) if name == module or name.startswith(f"{module}._")]
    for obj in owners:
        for part in target.split("."):
            if not hasattr(obj, part):
                break
            obj = getattr(obj, part)
        else:
            return True
    return False


def setup(app):
    """Two rules for every page, so no name is documented twice and no attribute docstring is misread."""
    from maskcls_hpo.errors import MaskclsError

    def skip_member(app, what, name, obj, skip, options):
        # Error classes have their section on the Errors page; a name a public module re-exports from another
        # public module is documented there (a sub-package re-exporting its private modules keeps its names).
        if isinstance(obj, type) and issubclass(obj, MaskclsError):
            return True
        home = getattr(obj, "__module__", None)
        if what == "module" and isinstance(home, str) and _public(home) and home != _current_module(app):
            return True
        return None

    # napoleon reads an attribute docstring "Exit code: 0 when ..." as type "Exit code"; keep them as written.
    saved: dict[str, list[str]] = {}

    def before_napoleon(app, what, name, obj, options, lines):
        if what in ("attribute", "data", "property"):
            saved[name] = list(lines)

    def after_napoleon(app, what, name, obj, options, lines):
        if name in saved:
            lines[:] = saved.pop(name)

    def resolve_short(app, env, node, contnode):
        # Docstrings name their neighbours short (:func:`open_study`, :func:`data.split_by_person`), the way
        # the code reads; a short name resolves when exactly one documented object ends with it. A name spelt
        # from the package root (maskcls_hpo.x.y) must name an object there (a re-export counts, and the lazy
        # names of maskcls_hpo and maskcls_hpo.hpo are followed): one that moved away fails the build.
        if node.get("refdomain") != "py":
            return None
        target = _through_lazy(node["reftarget"].lstrip(".~"))
        if target.startswith("maskcls_hpo."):
            home = _home_of(target)
            matches = [t for t in (target, home) if t and t in env.get_domain("py").objects][:1]
        else:
            objects = env.get_domain("py").objects
            matches = [full for full in objects if full.endswith("." + target)]
            allowed = {f"py:{t}" for t in env.get_domain("py").objtypes_for_role(node["reftype"]) or ()}
            matches = [full for full in matches if not allowed or f"py:{objects[full].objtype}" in allowed]
        if len(matches) == 1:
            return env.get_domain("py").resolve_xref(
                env, node["refdoc"], app.builder, node["reftype"], matches[0], node, contnode
            )
        # A constant or private helper the docstring's own module defines (DEFAULT_STORAGE, _enable_wal) has no
        # page of its own: shown as code, unlinked. A name the module does not have still fails.
        if _defined_in(node.get("py:module"), target):
            return contnode
        return None

    app.connect("missing-reference", resolve_short)
    app.connect("autodoc-skip-member", skip_member)
    app.connect("autodoc-process-docstring", before_napoleon, priority=100)
    app.connect("autodoc-process-docstring", after_napoleon, priority=900)


highlight_language = "none"  # a block without a language is shown as it is (shell lines, output)
html_theme = "furo"
html_title = "maskcls-hpo"
html_static_path: list[str] = []
