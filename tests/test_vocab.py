"""The real-vocabulary loader (optional ``data`` extra): sizes, normalisation, valences read from the
packaged lexicons (checked against the packages' own analysers), push-forward sizes, bad input."""

import math

import numpy as np
import pytest

import asymalign as aa

pytest.importorskip("wordfreq")
pytest.importorskip("afinn")
pytest.importorskip("vaderSentiment")

K = 20_000


@pytest.fixture(scope="module")
def vocab():
    return aa.load_vocabulary(K)


def test_sizes_normalisation_and_left_out_mass(vocab):
    import wordfreq

    assert len(vocab.words) == K == len(set(vocab.words))
    for a in (vocab.p, vocab.afinn, vocab.vader):
        assert a.shape == (K,) and a.dtype == np.float64 and not a.flags.writeable
    assert np.all(vocab.p > 0)
    assert math.isclose(float(vocab.p.sum()), 1.0, rel_tol=1e-12)
    # p is the renormalised wordfreq frequency; left_out = 1 - the kept frequency mass
    f = np.array([wordfreq.word_frequency(w, "en") for w in vocab.words[:50]])
    kept = 1.0 - vocab.left_out
    np.testing.assert_allclose(vocab.p[:50], f / kept, rtol=1e-12)
    assert 0.0 < vocab.left_out < 0.2
    assert np.all(np.diff(vocab.p) <= 1e-12)  # most frequent first
    assert vocab.words[:3] == ("the", "to", "and")
    small = aa.load_vocabulary(1000)
    assert small.words == vocab.words[:1000] and small.left_out > vocab.left_out


def test_valences_agree_with_the_packages_own_analysers(vocab):
    from afinn import Afinn
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    af = Afinn()
    lex = SentimentIntensityAnalyzer().lexicon
    idx = {w: i for i, w in enumerate(vocab.words)}
    for word, a, v in [("good", 3, 1.9), ("bad", -3, -2.5), ("love", 3, 3.2), ("hate", -3, -2.7), ("the", 0, 0.0)]:
        i = idx[word]
        assert vocab.afinn[i] == a == af.score(word)
        assert vocab.vader[i] == v == round(lex.get(word, 0.0), 1)
    rng = np.random.default_rng(0)
    for i in rng.choice(K, 300, replace=False):
        w = vocab.words[i]
        assert vocab.afinn[i] == af._dict.get(w, 0)  # the package's own parse of its lexicon file
        assert vocab.vader[i] == round(lex.get(w, 0.0), 1)
    assert set(np.unique(vocab.afinn)) <= set(range(-5, 6))
    np.testing.assert_allclose(vocab.vader * 10, np.round(vocab.vader * 10), atol=1e-9)
    # the two lexicons agree in sign on most valenced words (a sanity check of the alignment)
    both = (vocab.afinn != 0) & (vocab.vader != 0)
    assert both.sum() > 1000 and np.mean(np.sign(vocab.afinn[both]) == np.sign(vocab.vader[both])) > 0.9


def test_pushforward_sizes_and_lattice(vocab):
    va, wa = aa.pushforward(vocab.p, vocab.afinn)
    assert va.tolist() == [float(x) for x in range(-5, 6)]
    vv, wv = aa.pushforward(vocab.p, vocab.vader)
    assert 50 <= vv.size <= 80 and vv.min() >= -4.0 and vv.max() <= 4.0
    np.testing.assert_allclose(np.diff(vv) * 10, np.round(np.diff(vv) * 10), atol=1e-9)
    assert wa[va == 0][0] > 0.9 and wv[vv == 0][0] > 0.9  # most words are neutral
    gl = aa.gold_given_level(vocab.p, vocab.afinn, vocab.vader, 3)
    assert gl.levels.shape == (31,)  # levels -15..15
    np.testing.assert_allclose(np.exp(gl.log_prob) @ gl.mean, 3 * float(vocab.p @ vocab.vader), rtol=1e-10)


def test_cached_and_bad_k():
    assert aa.load_vocabulary(K) is aa.load_vocabulary(K)
    for bad in (0, -3, 2.5, True, aa.MAX_VOCABULARY + 1, 10**9):
        with pytest.raises(ValueError, match="k"):
            aa.load_vocabulary(bad)


def test_missing_extra_gives_a_clear_import_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "wordfreq", None)  # `import wordfreq` now raises ImportError
    with pytest.raises(ImportError, match=r'pip install -e "\.\[data\]"'):
        aa.load_vocabulary(7)  # a size not cached yet
