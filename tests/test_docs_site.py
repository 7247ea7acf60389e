"""The documentation site builds in strict mode, and its checks really fail when they should.

`mkdocs build --strict` fails on a broken cross-reference, a missing page or include, a docstring that
documents a parameter the function does not have, and a public name missing from the API reference
(`docs/hooks.py`). Skipped, with the reason, only when the `docs` extra is not installed.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import types

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
_MISSING_DOCS = [
    m
    for m in ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")
    if importlib.util.find_spec(m.split(".")[0]) is None
]
needs_mkdocs = pytest.mark.skipif(
    bool(_MISSING_DOCS), reason=f"docs extra not installed (missing {_MISSING_DOCS}): pip install -e '.[docs]'"
)


def _hooks():
    spec = importlib.util.spec_from_file_location("asymalign_docs_hooks", ROOT / "docs" / "hooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _build(config: pathlib.Path, site: pathlib.Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    env.pop("ASYMALIGN_DOCS_DRAFT", None)
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=config.parent,
    )


@needs_mkdocs
def test_site_builds_in_strict_mode(tmp_path):
    site = tmp_path / "site"
    res = _build(ROOT / "mkdocs.yml", site)
    assert res.returncode == 0, res.stdout + res.stderr
    theory = (site / "theory" / "index.html").read_text()
    assert all(f'id="s{n}"' in theory for n in range(1, 15)), "theory page lost a §N anchor the docstrings cite"
    assert 'class="arithmatex"' in theory and "$$" not in theory, "unrendered display math on the theory page"
    pngs = sorted(p.name for p in (ROOT / "figures").glob("*.png"))
    assert pngs and all((site / "figures" / name).is_file() for name in pngs), "figures not copied into the site"
    api = (site / "api" / "tilting" / "index.html").read_text()
    assert 'id="asymalign.tilting.solve_lambda"' in api
    assert 'href="../../theory/#s3"' in api, "THEORY.md §N citations in docstrings are not linked to the theory page"


@needs_mkdocs
def test_strict_build_fails_when_a_public_name_is_not_in_the_reference(tmp_path):
    # The real site minus one ::: directive (information measures): the hook must fail the build and name them.
    for name in ("README.md", "figures", "benchmarks", "asymalign"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    page = tmp_path / "docs" / "api" / "information.md"
    page.write_text("\n".join(ln for ln in page.read_text().splitlines() if not ln.startswith(":::")) + "\n")
    res = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "missing from the API reference" in out and "asymalign.renyi_divergence" in out, out


def test_missing_from_reference_on_a_fake_package(monkeypatch):
    hooks = _hooks()
    fake = types.ModuleType("fake_pkg")
    sub = types.ModuleType("fake_pkg.sub")

    def documented():
        """Documented."""

    def forgotten():
        """Never rendered."""

    sub.documented, sub.forgotten = documented, forgotten
    fake.documented, fake.forgotten, fake.sub = documented, forgotten, sub
    fake.__all__ = ["documented", "forgotten", "not_even_defined"]
    monkeypatch.setitem(sys.modules, "fake_pkg", fake)
    monkeypatch.setitem(sys.modules, "fake_pkg.sub", sub)
    exported = {"fake_pkg": fake.__all__}
    # Rendered on its submodule's page: the re-export counts as documented, the others do not.
    assert hooks.missing_from_reference({"fake_pkg.sub.documented"}, exported) == [
        "fake_pkg.forgotten",
        "fake_pkg.not_even_defined",
    ]
    # An anchor with the same last name but another object does not document it.
    other = types.ModuleType("fake_pkg.other")
    other.forgotten = lambda: None
    monkeypatch.setitem(sys.modules, "fake_pkg.other", other)
    fake.other = other
    assert "fake_pkg.forgotten" in hooks.missing_from_reference({"fake_pkg.other.forgotten"}, exported)
    assert (
        hooks.missing_from_reference(
            {"fake_pkg.sub.documented", "fake_pkg.sub.forgotten", "fake_pkg.not_even_defined"}, exported
        )
        == []
    )


def test_post_build_hook_raises_for_a_missing_name(monkeypatch):
    pytest.importorskip("mkdocs")
    from mkdocs.exceptions import PluginError

    hooks = _hooks()
    names = hooks.exported_names()["asymalign"]  # __all__ (or the public attributes while it has none)
    assert names
    monkeypatch.setattr(hooks, "exported_names", lambda package="asymalign": {"asymalign": names})
    monkeypatch.setattr(hooks, "stale_parameters", lambda exported: [])
    everything = {f"asymalign.{n}" for n in names}
    hooks.on_pre_build(config=None)
    hooks._anchors.update(everything)
    hooks.on_post_build(config=None)  # all there: no error
    hooks.on_pre_build(config=None)
    hooks._anchors.update(everything - {f"asymalign.{names[0]}"})
    with pytest.raises(PluginError, match=f"asymalign.{names[0]}"):
        hooks.on_post_build(config=None)


def test_stale_docstring_parameters_are_found(monkeypatch):
    hooks = _hooks()

    def f(p, r, log_num_samples):
        """Doc.

        Args:
          p, r: the model.
          log_n: the old name of the third argument.
            continuation: not a parameter.

        Returns:
          x: not a parameter either.
        """

    mod = types.ModuleType("fake_stale")
    mod.f = f
    monkeypatch.setitem(sys.modules, "fake_stale", mod)
    assert hooks.documented_parameters(f.__doc__) == ["p", "r", "log_n"]
    assert hooks.stale_parameters({"fake_stale": ["f"]}) == ["fake_stale.f(log_n)"]


def test_include_directives_and_rst_conversion(tmp_path):
    hooks = _hooks()
    text = "# T\n\n## A\n\nbody a\n\n```bash\n# not a heading\n```\n\n### A.1\n\nsub\n\n## B\n\nbody b\n"
    assert hooks.section(text, "A") == "body a\n\n```bash\n# not a heading\n```\n\n### A.1\n\nsub"
    assert hooks.section(text, "B") == "body b"
    with pytest.raises(Exception, match="no heading"):
        hooks.section(text, "C")
    assert hooks._fix_links("see [x](THEORY.md#s3) and [y](figures/a.png)") == (
        "see [x](theory.md#s3) and [y](figures/a.png)"
    )

    assert "not generated yet" in hooks._fix_links("![m](figures/no_such_figure.png)")
    spec = importlib.util.spec_from_file_location("asymalign_griffe_rst", ROOT / "docs" / "griffe_rst.py")
    if importlib.util.find_spec("griffe") is None:
        pytest.skip("griffe not installed")
    rst = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rst)
    doc = (
        "Law.\n\n.. math:: B_N(s) = F(s)^N\n          - F(s-)^N\n\n"
        "See :func:`~asymalign.kl` and :mod:`asymalign.markov`."
    )
    assert rst.rst_to_markdown(doc) == (
        "Law.\n\n$$\nB_N(s) = F(s)^N\n- F(s-)^N\n$$\n\nSee `kl` and `asymalign.markov`."
    )
    assert rst.rst_to_markdown("Config::\n\n    a = 1\n\n::\n\n    b") == "Config:\n\n    a = 1\n\n\n\n    b"
    doc = "Returns:\n  x.\n\n>>> [round(v, 1) for v in (1, 2)]\n[1, 2]\n\nText :func:`f`.\n```\n:func:`kept`\n```"
    assert rst.rst_to_markdown(doc) == (
        "Returns:\n  x.\n\n```pycon\n>>> [round(v, 1) for v in (1, 2)]\n[1, 2]\n```\n\n"
        "Text `f`.\n```\n:func:`kept`\n```"
    )


def test_theory_page_examples_run_and_match_numpy():
    import re

    import numpy as np

    text = (ROOT / "docs" / "theory.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the theory page lost its example"
    ns: dict = {}
    for block in blocks:
        exec(compile(block, "docs/theory.md", "exec"), ns)
    # The level tilt with score = level and beta = 2 is the level law of φ_{1/2}^n: KL = n K(1/2), mean = n Λ'(1/2).
    p, r, n, lam = np.asarray(ns["p"]), np.asarray(ns["r"]), ns["n"], 0.5
    phi = p * np.exp(lam * r)
    log_z = np.log(phi.sum())
    phi /= phi.sum()
    mean = phi @ r
    aa = ns["aa"]
    assert float(aa.law_kl(ns["tilted"], ns["ref"])) == pytest.approx(n * (lam * mean - log_z), rel=1e-10)
    assert float(aa.law_mean(ns["tilted"])) == pytest.approx(n * mean, rel=1e-12)
    assert float(aa.win_rate(ns["ref"], ns["ref"])) == pytest.approx(0.5, abs=1e-12)
