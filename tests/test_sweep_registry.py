"""Sweep quantities are registered, not hard-coded (asymalign.sweep.quantities), and
results also come as typed Parquet (asymalign.sweep.store).

Runs in this process (one CPU device): a small config, a user quantity from a
module written to tmp_path (named "module:function" in the config), a quantity
registered with register_quantity, each checked against NumPy computations
that do not use the package (enumeration of all k^n sequences).
"""

import doctest
import importlib
import itertools
import json
import math
import sys
import textwrap
import tomllib

import numpy as np
import pytest

import asymalign as aa
from asymalign import sweep

SMALL = """
name = "small"
[[reference]]
family = "bernoulli"
prob = [0.2, 0.7]
[[reference]]
family = "zipf"
k = 3
s = 1.0
[[reward]]
family = "linear"
[grid]
delta = [0.0, 0.1, 0.5, 3.0]
n = [3]
x = [0.5]
"""

USER_MODULE = '''
import jax
import jax.numpy as jnp

import asymalign as aa
from asymalign import sweep


def entropy(unit):
    """Shannon entropy of the reference (nats)."""
    return -jnp.sum(unit.p * jnp.log(unit.p))


@sweep.quantity(axes=("delta", "n"), description="E[r_n]/n under best-of-N, from the shared exact law")
def bon_mean_user(unit):
    def one(delta):
        return aa.law_mean(aa.best_of_n(unit.law, unit.n * delta)) / unit.n

    return unit.per_delta(jax.vmap(one)(unit.delta))


def delta(unit):
    return 0.0


not_callable = 3
'''


def _bon_mean_enumerated(p, r, n, log_num_samples):
    """E[r_n]/n under best-of-N by enumerating all k^n sequences (NumPy only)."""
    k = len(p)
    totals = {}
    for seq in itertools.product(range(k), repeat=n):
        s = float(sum(r[i] for i in seq))
        totals[s] = totals.get(s, 0.0) + math.prod(p[i] for i in seq)
    levels = np.array(sorted(totals))
    probs = np.array([totals[s] for s in levels])
    F = np.cumsum(probs)
    F_prev = np.concatenate([[0.0], F[:-1]])
    N = math.exp(log_num_samples)
    B = F**N - F_prev**N
    return float(B @ levels) / n


@pytest.fixture(scope="module")
def user_module(tmp_path_factory):
    d = tmp_path_factory.mktemp("usermod")
    (d / "userq_mod.py").write_text(textwrap.dedent(USER_MODULE))
    sys.path.insert(0, str(d))
    yield "userq_mod"
    sys.path.remove(str(d))
    sys.modules.pop("userq_mod", None)


def _cfg(quantities, extra=""):
    q = "quantities = [" + ", ".join(f'"{x}"' for x in quantities) + "]\n"
    return sweep.parse_config(tomllib.loads(q + SMALL + extra))


def _user_cfg(user_module):
    specs = ["lambda_star", "bon_reward", "bon_win_rate", "rate_function"]
    return _cfg(specs + [f"{user_module}:entropy", f"{user_module}:bon_mean_user"])


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, user_module):
    out = tmp_path_factory.mktemp("small") / "out"
    res = sweep.run_sweep(_user_cfg(user_module), out, progress=False, compile_cache=False)
    return out, res


def test_user_quantity_from_module(small_run, user_module):
    out, res = small_run
    cfg = _user_cfg(user_module)
    assert cfg.columns == ("lambda_star", "bon_reward", "bon_win_rate", "rate_function", "entropy", "bon_mean_user")
    assert res.computed_points == res.num_points == 3 * 4  # 3 models x 4 budgets
    cols = sweep.read_results(out)
    models = sweep.build_models(cfg)
    for i in range(res.num_points):
        m = models[cols["model"][i]]
        p, r, n, d = m.p, m.r, int(cols["n"][i]), float(cols["delta"][i])
        np.testing.assert_allclose(cols["entropy"][i], -np.sum(p * np.log(p)), rtol=1e-13)
        want = _bon_mean_enumerated(p, r, n, n * d)
        np.testing.assert_allclose(cols["bon_mean_user"][i], want, rtol=1e-10, atol=1e-13)
        # the built-in quantity and the user's agree, and both differ from a
        # slightly wrong answer (best-of-(N+1)) by far more than the tolerance
        np.testing.assert_allclose(cols["bon_reward"][i], want, rtol=1e-10, atol=1e-13)
        if 0 < d < 1:  # (at Δ = 3 best-of-N has saturated at the top level)
            wrong = _bon_mean_enumerated(p, r, n, math.log(math.exp(n * d) + 1))
            assert abs(wrong - want) > 1e-6
    meta = json.loads((out / "meta.json").read_text())
    assert meta["quantities"]["entropy"] == "Shannon entropy of the reference (nats)."
    assert meta["quantities"]["bon_mean_user"].startswith("E[r_n]/n under best-of-N")


def test_fused_run_equals_static_groups(tmp_path, small_run, user_module):
    """Built-in quantities alone run fused (alphabets padded with p = 0 letters
    to k = 4, n traced, host laws: one group); next to a user quantity they run
    in the static (k, law method, n) groups. Both give the same numbers."""
    out, _ = small_run
    builtin = ["lambda_star", "bon_reward", "bon_win_rate", "rate_function"]
    cfg = _cfg(builtin)
    assert [key for key, _ in sweep.make_plan(cfg, 256).groups] == [sweep.plan.GroupKey("iid", 4, "host", None, 64)]
    static = [(k.k, k.method, k.n) for k, _ in sweep.make_plan(_user_cfg(user_module), 256).groups]
    assert static == [(2, "lattice", 3), (3, "lattice", 3)]
    sweep.run_sweep(cfg, tmp_path / "fused", progress=False, compile_cache=False)
    fused, ref = sweep.read_results(tmp_path / "fused"), sweep.read_results(out)
    for q in builtin:
        np.testing.assert_allclose(fused[q], ref[q], rtol=1e-12, atol=1e-14, err_msg=q)


def test_register_quantity(tmp_path):
    import jax.numpy as jnp

    def tilt_entropy(unit):
        return unit.per_delta(aa.entropy(aa.tilt(*unit.batched(unit.delta.shape[0]), unit.lam)))

    try:
        q = sweep.register_quantity("tilt_entropy_test", tilt_entropy, axes=("delta",), description="H(φ_λ*)")
        assert q.reference_kinds == ("iid",) and sweep.QUANTITIES["tilt_entropy_test"] is q
        cfg = _cfg(["lambda_star", "tilt_entropy_test"])
        sweep.run_sweep(cfg, tmp_path / "out", progress=False, compile_cache=False)
        cols = sweep.read_results(tmp_path / "out")
        models = sweep.build_models(cfg)
        for i in (1, 5, 10):
            m, lam = models[cols["model"][i]], float(cols["lambda_star"][i])
            w = m.p * np.exp(lam * (m.r - m.r.max()))
            w /= w.sum()
            np.testing.assert_allclose(cols["tilt_entropy_test"][i], -np.sum(w * np.log(w)), rtol=1e-12)
        # Without a quantities list, registered quantities join the defaults.
        assert "tilt_entropy_test" in sweep.parse_config(tomllib.loads(SMALL)).quantities
        with pytest.raises(ValueError, match="already registered for iid; pass replace=True"):
            sweep.register_quantity("tilt_entropy_test", lambda u: jnp.zeros(()), axes=("delta",))
        with pytest.raises(ValueError, match="registered with axes"):
            sweep.register_quantity("tilt_entropy_test", tilt_entropy, axes=("x",), reference_kinds="markov")
    finally:
        sweep.QUANTITIES.pop("tilt_entropy_test", None)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"name": "2bad"}, "name must be a Python identifier"),
        ({"axes": ("delta", "time")}, "axes must be among delta, n, x"),
        ({"reference_kinds": ("hmm",)}, "reference_kinds must be a non-empty subset of iid, markov"),
        ({"fn": 3}, "fn must be callable"),
    ],
)
def test_register_quantity_rejects(kwargs, message):
    args = {"name": "q_bad", "fn": lambda u: 0.0, **kwargs}
    with pytest.raises(ValueError, match=message):
        sweep.register_quantity(args.pop("name"), args.pop("fn"), **args)
    assert "q_bad" not in sweep.QUANTITIES


@pytest.mark.parametrize(
    "spec, message",
    [
        ("no_such_module_xyz:f", "quantity 'no_such_module_xyz:f': cannot import module 'no_such_module_xyz'"),
        ("userq_mod:nope", "quantity 'userq_mod:nope': module 'userq_mod' has no attribute 'nope'"),
        ("userq_mod:not_callable", "quantity 'userq_mod:not_callable': 'not_callable' is not callable"),
        ("userq_mod:delta", "gives the column 'delta', a parameter column"),
        (":f", "a path must read 'package.module:function'"),
    ],
)
def test_bad_user_quantities(user_module, spec, message):
    with pytest.raises(sweep.SweepConfigError) as e:
        _cfg([spec])
    assert message in str(e.value)


def test_user_quantity_kind_and_axes_checked(user_module):
    markov = '\n[[reference]]\nfamily = "markov"\ntransition = [[0.5, 0.5], [0.4, 0.6]]\n'
    with pytest.raises(sweep.SweepConfigError, match="'userq_mod:entropy' is not defined for markov references"):
        _cfg(["userq_mod:entropy"], markov)
    no_n = SMALL.replace("n = [3]\n", "")
    with pytest.raises(sweep.SweepConfigError, match="'userq_mod:bon_mean_user' needs grid axis n"):
        sweep.parse_config(tomllib.loads('quantities = ["userq_mod:bon_mean_user"]\n' + no_n))


def test_parquet_results(tmp_path, small_run, user_module):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    out, _ = small_run
    cols = sweep.read_results(out)
    table = pq.read_table(out / "results.parquet")
    assert table.column_names == list(cols)
    types = dict(zip(table.column_names, table.schema.types, strict=True))
    assert types["reference"] == pa.string() and types["model"] == pa.int64() and types["n"] == pa.int64()
    assert types["delta"] == pa.float64() and types["bon_win_rate"] == pa.float64() and types["prob"] == pa.float64()
    for name in table.column_names:
        got = table.column(name).to_pylist()
        want = cols[name].tolist()
        if name in ("prob", "s"):  # blank parameters are nulls, NaN in the NPZ
            assert [g is None for g in got] == [math.isnan(w) for w in want]
            got = [math.nan if g is None else g for g in got]
            np.testing.assert_array_equal(got, want)
        else:
            assert got == want, name
    assert json.loads(table.schema.metadata[b"asymalign.sweep"])["name"] == "small"
    # parquet=False writes CSV and NPZ only
    sweep.run_sweep(_user_cfg(user_module), tmp_path / "nopq", progress=False, compile_cache=False, parquet=False)
    assert (tmp_path / "nopq" / "results.csv").exists() and not (tmp_path / "nopq" / "results.parquet").exists()


@pytest.mark.parametrize(
    "name",
    [
        "asymalign.sweep",
        "asymalign.sweep.quantities",
        "asymalign.sweep.config",
        "asymalign.sweep.distributed",
        "asymalign.sweep.run",
        "asymalign.sweep.store",
    ],
)
def test_docstring_examples(name):
    mod = importlib.import_module(name)
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    tests = doctest.DocTestFinder().find(mod, globs=dict(vars(mod)))
    for test in tests:
        runner.run(test)
    res = runner.summarize(verbose=False)
    assert res.failed == 0, f"{res.failed} doctest failures in {name}"
    assert sum(len(t.examples) for t in tests) > 0
