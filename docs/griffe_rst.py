"""Griffe extension (mkdocs.yml): render the reStructuredText bits of asymalign docstrings as Markdown.

The docstrings are Google style but state formulas with ``.. math::`` blocks and
refer to each other with Sphinx roles (``:func:`~asymalign.kl```), which
Markdown would show verbatim. Before mkdocstrings renders a docstring:

* a ``.. math::`` block (inline content and/or the indented lines below it)
  becomes a display formula ``$$ … $$`` (MathJax through pymdownx.arithmatex);
* ``:func:`~a.b.c``` becomes ```c``` and ``:mod:`a.b``` becomes ```a.b```
  (plain code, never a link that could break the strict build);
* an RST literal-block marker ``::`` is dropped (the indented block below is a
  Markdown code block already);
* a doctest (``>>>`` lines and their output, up to a blank line) becomes a
  ``pycon`` code block wherever it stands (Markdown would read ``>>>`` as nested
  block quotes and ``[a]\n[b]`` output as a reference link).

The docstrings themselves are not changed (``help()`` and doctests see the originals).
"""

from __future__ import annotations

import re

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|mod|class|meth|attr|data|obj|exc|const):`(~?)([^`]+)`")
_MATH = re.compile(r"^(\s*)\.\. math::\s*(.*)$")


def _role(m: re.Match) -> str:
    tilde, target = m.group(1), m.group(2).strip()
    if "<" in target and target.endswith(">"):  # :func:`text <target>`
        target = target.split("<", 1)[0].strip()
    elif tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def rst_to_markdown(text: str) -> str:
    """Convert ``.. math::`` blocks and Sphinx roles in one docstring (see the module docstring)."""
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    fence = None
    while i < len(lines):
        stripped = lines[i].lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
            out.append(lines[i])
            i += 1
            continue
        if stripped.startswith(">>>"):  # a doctest: up to the next blank line, as a pycon code block
            pad = lines[i][: len(lines[i]) - len(stripped)]
            if out and out[-1].strip():
                out.append("")
            out.append(pad + "```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(pad + lines[i][len(pad) :] if lines[i].startswith(pad) else lines[i])
                i += 1
            out.append(pad + "```")
            continue
        m = _MATH.match(lines[i])
        if not m:
            line = _ROLE.sub(_role, lines[i])
            if line.strip() == "::":  # RST literal-block marker on its own line: the indented block follows
                line = ""
            elif line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
                line = line.rstrip()[:-1]  # "Example::" -> "Example:"
            out.append(line)
            i += 1
            continue
        pad, body = m.group(1), [m.group(2)] if m.group(2).strip() else []
        base = len(pad)
        i += 1
        # The block: blank lines and lines indented deeper than the directive.
        block: list[str] = []
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > base):
            block.append(lines[i])
            i += 1
        while block and not block[-1].strip():  # trailing blank lines stay outside
            block.pop()
            i -= 1
        body += [ln.strip() for ln in block if ln.strip()]
        if out and out[-1].strip():
            out.append("")
        out += [pad + "$$", *(pad + ln for ln in body), pad + "$$"]
        if i < len(lines) and lines[i].strip():
            out.append("")
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite each object's docstring as it is loaded (see :func:`rst_to_markdown`)."""

    def on_instance(self, *, node, obj, agent, **kwargs) -> None:  # noqa: D102
        doc = getattr(obj, "docstring", None)
        if doc is not None and doc.value and any(t in doc.value for t in (".. math::", ":`", ">>>")):
            doc.value = rst_to_markdown(doc.value)
