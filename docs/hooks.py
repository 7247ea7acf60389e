"""mkdocs hooks for the asymalign documentation site (referenced from mkdocs.yml).

At build time they

* serve ``figures/*.png`` of the repository as ``figures/NAME.png`` in the site
  (generated files: nothing is copied into ``docs/``, nothing to keep in sync);
* expand three comment directives in the Markdown pages, so that the site shows
  the repository's own text instead of a copy that drifts:

  - ``<!-- include: PATH -->``: the whole file ``PATH`` (relative to the repository root);
  - ``<!-- include-section: PATH | Heading -->``: the body of the section of ``PATH``
    under the heading ``Heading`` (up to the next heading of the same or a higher level);
  - ``<!-- figures-gallery -->``: every ``figures/*.png`` not already shown on the page,
    captioned with the experiment's one-line description from ``asymalign._registry``;

  a directive whose file or section is missing fails the build;
* fail the build (``PluginError``) when a public name of the package (an entry of
  ``__all__`` of ``asymalign`` or of a public subpackage that defines ``__all__``:
  ``asymalign.markov``, ``asymalign.testing``, ``asymalign.sweep``) is not rendered by a
  ``:::`` directive of the API reference (names without a docstring are rendered too,
  with their signature or value), or a docstring documents a parameter its function
  does not have. :func:`missing_from_reference` is the check;
  ``tests/test_docs_site.py`` runs it on a fake ``__all__`` to show it fails.
"""

from __future__ import annotations

import importlib
import os
import pathlib
import pkgutil
import re
from collections.abc import Iterable, Mapping

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = "asymalign"

# Links in included repository text that point at repository files: where they live in the site.
_LINK_MAP = {
    "THEORY.md": "theory.md",
    "docs/theory.md": "theory.md",
    "benchmarks/RESULTS.md": "benchmarks.md",
    "RESULTS.md": "benchmarks.md",
    "README.md": "index.md",
    "docs/testing.md": "testing.md",
}
_DIRECTIVE = re.compile(r"<!--\s*(include-section|include|figures-gallery)\s*:?\s*(.*?)\s*-->")
_ANCHOR = re.compile(r'\bid="(' + PACKAGE + r'(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"')
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")

_anchors: set[str] = set()  # ids of the objects rendered by mkdocstrings in this build
_exported: dict[str, list[str]] = {}  # exported_names(), once per build


# --------------------------------------------------------------------------------------
# The public-name check
# --------------------------------------------------------------------------------------


def exported_names(package: str = PACKAGE) -> dict[str, list[str]]:
    """``{module: __all__}`` for the package and its public subpackages that define ``__all__``.

    Subpackages (``asymalign.markov``, ``asymalign.testing``, ``asymalign.sweep``) are namespaces of
    their own; the package's plain modules are covered by the package's ``__all__`` (re-exports).
    """
    pkg = importlib.import_module(package)
    out = {package: list(getattr(pkg, "__all__", None) or _public_attributes(pkg))}
    for info in pkgutil.iter_modules(pkg.__path__, prefix=package + "."):
        if not info.ispkg or info.name.rsplit(".", 1)[1].startswith("_"):
            continue
        mod = importlib.import_module(info.name)
        if hasattr(mod, "__all__"):
            out[info.name] = list(mod.__all__)
    return out


def _public_attributes(mod) -> list[str]:
    """Public names of a module without ``__all__``: everything not private and not a submodule."""
    import types

    return [n for n, v in vars(mod).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)]


def _resolve(path: str):
    """The object named by a dotted path (longest importable module prefix, then attributes)."""
    parts = path.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for attr in parts[i:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return _MISSING
        return obj
    return _MISSING


_MISSING = object()


def missing_from_reference(anchors: Iterable[str], exported: Mapping[str, Iterable[str]]) -> list[str]:
    """Public names that no rendered API entry documents.

    A name ``N`` exported by module ``M`` is documented when the reference renders an
    object with id ``M.N``, or an id ``X.N`` that resolves to the very same object
    (a name re-exported by ``asymalign`` and rendered on its concept module's page).

    Args:
      anchors: ids of the rendered objects (``asymalign.tilting.solve_lambda``, ...).
      exported: module name -> its ``__all__``.

    Returns:
      The sorted dotted names ``M.N`` that are missing (empty when all are documented).
    """
    by_last: dict[str, list[str]] = {}
    for a in anchors:
        by_last.setdefault(a.rsplit(".", 1)[-1], []).append(a)
    missing = []
    for module, names in exported.items():
        mod = _resolve(module)
        for name in names:
            if name.startswith("__"):  # __version__ and friends: metadata, not API entries
                continue
            full = f"{module}.{name}"
            candidates = by_last.get(name, [])
            if full in candidates:
                continue
            obj = getattr(mod, name, _MISSING) if mod is not _MISSING else _MISSING
            if obj is not _MISSING and any(_resolve(a) is obj for a in candidates):
                continue
            missing.append(full)
    return sorted(missing)


_ARGS_HEADER = re.compile(r"^(\s*)(Args|Arguments|Parameters|Keyword Args|Keyword Arguments):\s*$")
_ARG_LINE = re.compile(
    r"^([*]{0,2}[A-Za-z_][A-Za-z0-9_]*(?:\s*,\s*[*]{0,2}[A-Za-z_][A-Za-z0-9_]*)*)\s*(?:\([^)]*\))?\s*:"
)


def documented_parameters(doc: str) -> list[str]:
    """Parameter names listed in the ``Args:`` sections of a Google-style docstring.

    One entry may name several parameters (``p, r: the model``).
    """
    lines = (doc or "").splitlines()
    names: list[str] = []
    i = 0
    while i < len(lines):
        m = _ARGS_HEADER.match(lines[i])
        i += 1
        if not m:
            continue
        base, item = len(m.group(1)), None
        while i < len(lines):
            line = lines[i]
            if line.strip():
                ind = len(line) - len(line.lstrip())
                if ind <= base:
                    break
                if item is None:
                    item = ind
                if ind == item:
                    a = _ARG_LINE.match(line.strip())
                    if a:
                        names += [n.strip().lstrip("*") for n in a.group(1).split(",")]
            i += 1
    return names


def stale_parameters(exported: Mapping[str, Iterable[str]]) -> list[str]:
    """``module.function(name)`` for every documented parameter that the function does not have.

    Catches docstrings left behind by a rename (``log_n`` -> ``log_num_samples``).
    """
    import inspect

    out = set()
    for module, names in exported.items():
        mod = _resolve(module)
        for name in names:
            obj = getattr(mod, name, None)
            funcs = []
            if inspect.isfunction(obj) or (callable(obj) and hasattr(obj, "__wrapped__")):
                funcs.append((name, obj))
            elif inspect.isclass(obj):
                funcs += [
                    (f"{name}.{k}", v) for k, v in vars(obj).items() if inspect.isfunction(v) and not k.startswith("_")
                ]
            for label, f in funcs:
                try:
                    params = set(inspect.signature(f).parameters)
                except (TypeError, ValueError):
                    continue
                for p in documented_parameters(inspect.getdoc(f)):
                    if p not in params:
                        out.add(f"{module}.{label}({p})")
    return sorted(out)


# --------------------------------------------------------------------------------------
# Include directives
# --------------------------------------------------------------------------------------


def _read(rel: str) -> str:
    path = ROOT / rel
    if not path.is_file():
        raise _error(f"include: {rel} does not exist (relative to the repository root {ROOT})")
    return path.read_text(encoding="utf-8")


def _strip_fences(lines: list[str]) -> list[bool]:
    """For each line, whether it lies inside a fenced code block (headings there are not headings)."""
    inside, out, fence = False, [], None
    for line in lines:
        s = line.lstrip()
        if not inside and (s.startswith("```") or s.startswith("~~~")):
            inside, fence = True, s[:3]
            out.append(True)
        elif inside and s.startswith(fence):
            inside = False
            out.append(True)
        else:
            out.append(inside)
    return out


def section(text: str, heading: str) -> str:
    """Body of the Markdown section titled ``heading`` (without the heading line)."""
    lines = text.splitlines()
    in_code = _strip_fences(lines)
    start, level = None, None
    for i, line in enumerate(lines):
        m = None if in_code[i] else _HEADING.match(line)
        if not m:
            continue
        if start is None and m.group(2).strip() == heading.strip():
            start, level = i + 1, len(m.group(1))
        elif start is not None and len(m.group(1)) <= level:
            return "\n".join(lines[start:i]).strip("\n")
    if start is None:
        raise _error(f"include-section: no heading {heading!r}")
    return "\n".join(lines[start:]).strip("\n")


def _missing_figures(text: str) -> str:
    """An image ``figures/NAME.png`` that is not (yet) in the repository becomes a one-line note."""

    def repl(m: re.Match) -> str:
        if (ROOT / "figures" / m.group(2)).is_file():
            return m.group(0)
        name = m.group(2).rsplit(".", 1)[0]
        return f"*(figure `{name}` not generated yet: `asymalign reproduce --only {name}`)*"

    return re.sub(r"!\[([^\]]*)\]\(figures/([^)\s]+)\)", repl, text)


def _fix_links(text: str) -> str:
    text = _missing_figures(text)

    def repl(m):
        target = m.group(2)
        anchor = ""
        if "#" in target:
            target, anchor = target.split("#", 1)
            anchor = "#" + anchor
        return f"]({_LINK_MAP.get(target, target)}{anchor})"

    return re.sub(r"\]\(([<]?)([^)\s>]+)[>]?\)", lambda m: repl(m), text)


def _gallery(markdown_so_far: str) -> str:
    try:
        from asymalign._registry import EXPERIMENTS
    except ImportError:  # pragma: no cover - registry moved
        EXPERIMENTS = {}
    pngs = sorted((ROOT / "figures").glob("*.png"))
    order = {name: i for i, name in enumerate(EXPERIMENTS)}
    pngs.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    parts = []
    for png in pngs:
        if f"figures/{png.name}" in markdown_so_far:
            continue
        desc = EXPERIMENTS.get(png.stem, "")
        parts.append(f"![{png.stem}](figures/{png.name})\n**`{png.stem}`**" + (f" — {desc}." if desc else ""))
    return "\n\n".join(parts)


def expand(markdown: str) -> str:
    """Expand the include directives of one page (see the module docstring)."""
    out, pos = [], 0
    for m in _DIRECTIVE.finditer(markdown):
        out.append(markdown[pos : m.start()])
        kind, arg = m.group(1), m.group(2)
        if kind == "include":
            out.append(_fix_links(_read(arg.strip())))
        elif kind == "include-section":
            if "|" not in arg:
                raise _error(f"include-section needs 'PATH | Heading', got {arg!r}")
            rel, heading = (s.strip() for s in arg.split("|", 1))
            try:
                out.append(_fix_links(section(_read(rel), heading)))
            except Exception as e:
                raise _error(f"{rel}: {e}") from e
        else:
            out.append(_gallery("".join(out)))
        pos = m.end()
    out.append(markdown[pos:])
    return "".join(out)


def _error(msg: str) -> Exception:
    try:
        from mkdocs.exceptions import PluginError
    except ImportError:  # pragma: no cover - used without mkdocs
        return RuntimeError(msg)
    return PluginError(msg)


# --------------------------------------------------------------------------------------
# Links between the theory page and the API reference
# --------------------------------------------------------------------------------------

_IN_CODE = re.compile(r"^\*\*In the code:\*\*(.*(?:\n(?!\s*\n).*)*)", re.M)
_CODE = re.compile(r"(?<!\[)`([A-Za-z_][A-Za-z0-9_.]*)`(?!\])")
_SECTION_REF = re.compile(r"(THEORY(?:\.md)?\s*)?§\s?(\d{1,2})\b")
_THEORY_SECTIONS = range(1, 15)


def link_code_lines(markdown: str, exported: Mapping[str, Iterable[str]]) -> str:
    """Link each name of the theory page's "**In the code:**" paragraphs to its API entry.

    ``name`` stands for ``asymalign.name``, ``markov.name`` for ``asymalign.markov.name``. A name that
    the package does not export fails the build (the page must not describe functions that do not exist).
    """
    public = {f"{m}.{n}" for m, names in exported.items() for n in names}
    unknown: list[str] = []

    def link(m: re.Match) -> str:
        name = m.group(1)
        ident = f"{PACKAGE}.{name}"
        if ident not in public:
            unknown.append(name)
            return m.group(0)
        return f"[`{name}`][{ident}]"

    out = _IN_CODE.sub(lambda m: "**In the code:**" + _CODE.sub(link, m.group(1)), markdown)
    if unknown and os.environ.get("ASYMALIGN_DOCS_DRAFT"):  # drafting against a partial package
        return out
    if unknown:
        raise _error("'In the code' names that the package does not export: " + ", ".join(sorted(set(unknown))))
    return out


def _register_aliases(page, anchors: list[str], config) -> None:
    """Let ``[x][asymalign.x]`` (and ``asymalign.markov.x``) link to where ``x`` is rendered."""
    autorefs = config.plugins.get("autorefs")
    if autorefs is None:
        return
    by_obj: dict[int, str] = {}
    for a in anchors:
        obj = _resolve(a)
        # Only functions and classes: constants (None, small ints) are shared between names.
        if obj is not _MISSING and hasattr(obj, "__qualname__") and hasattr(obj, "__module__"):
            by_obj.setdefault(id(obj), a)
    for module, names in _exported_cached().items():
        mod = _resolve(module)
        for name in names:
            ident = f"{module}.{name}"
            target = by_obj.get(id(getattr(mod, name, _MISSING)))
            if target and target != ident:
                autorefs.register_anchor(page, ident, anchor=target, primary=False)


def link_theory_sections(html: str, page) -> str:
    """Turn "THEORY.md §N" / "§N" in rendered API text into links to the theory page's section N."""
    from mkdocs.utils import get_relative_url

    base = get_relative_url("theory/", page.url)

    def sub_text(m: re.Match) -> str:
        n = int(m.group(2))
        if n not in _THEORY_SECTIONS:
            return m.group(0)
        return f'<a href="{base}#s{n}" title="THEORY §{n}">{m.group(0)}</a>'

    # Only in text between tags, never inside a tag's attributes or an existing link.
    parts = re.split(r"(<[^>]+>)", html)
    depth_a = 0
    for i, part in enumerate(parts):
        if part.startswith("<"):
            if re.match(r"<a[\s>]", part):
                depth_a += 1
            elif part.startswith("</a"):
                depth_a = max(0, depth_a - 1)
        elif depth_a == 0 and "§" in part:
            parts[i] = _SECTION_REF.sub(sub_text, part)
    return "".join(parts)


# --------------------------------------------------------------------------------------
# mkdocs events
# --------------------------------------------------------------------------------------


def _exported_cached() -> dict[str, list[str]]:
    if not _exported:
        try:
            _exported.update(exported_names())
        except Exception as e:  # an import error in the package: say so in one line
            raise _error(f"cannot import the package to list its public names: {type(e).__name__}: {e}") from e
    return _exported


def on_pre_build(config, **kwargs):
    _anchors.clear()
    _exported.clear()


def on_files(files, config, **kwargs):
    from mkdocs.structure.files import File

    for png in sorted((ROOT / "figures").glob("*.png")):
        uri = f"figures/{png.name}"
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files


def on_page_markdown(markdown, page, config, files, **kwargs):
    markdown = expand(markdown)
    if _IN_CODE.search(markdown):
        markdown = link_code_lines(markdown, _exported_cached())
    return markdown


def on_page_content(html, page, config, files, **kwargs):
    found = _ANCHOR.findall(html)
    _anchors.update(found)
    if found:
        _register_aliases(page, found, config)
        html = link_theory_sections(html, page)
    return html


def on_post_build(config, **kwargs):
    exported = _exported_cached()
    problems = []
    missing = missing_from_reference(_anchors, exported)
    if missing:
        problems.append(
            "public names missing from the API reference (add them to a ::: directive under docs/api/, "
            "and give them a docstring): " + ", ".join(missing)
        )
    stale = stale_parameters(exported)
    if stale:
        problems.append("docstrings document parameters the function does not have: " + ", ".join(stale))
    if problems:
        raise _error("; ".join(problems))
