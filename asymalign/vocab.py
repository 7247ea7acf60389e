r"""A real English vocabulary: unigram frequencies and two sentiment lexicons (optional ``data`` extra).

``load_vocabulary(k)`` returns the top ``k`` English words of the ``wordfreq``
package with their unigram frequencies, renormalised to a probability vector
``p`` (the frequency mass of the words left out is reported), and two
per-word rewards read from the lexicon files shipped inside their packages
(no download at run time):

* ``afinn``: AFINN-165 valence (``afinn`` package, ``data/AFINN-en-165.txt``),
  integers ``-5..5``, ``0`` for words not in the lexicon;
* ``vader``: VADER valence (``vaderSentiment`` package,
  ``vader_lexicon.txt``, mean rating rounded to one decimal), ``0`` when absent.

With these, a sentence of ``n`` words drawn from ``p^n`` is a memoryless
language model whose rewards push forward to a handful of lattice levels
(THEORY.md §7): 11 for AFINN, about 70 for VADER, so every exact method runs
at ``k = 20 000``. Install with ``pip install -e ".[data]"``.

References: Speer, *wordfreq* (Zenodo 10.5281/zenodo.7199437); Nielsen, "A new
ANEW: evaluation of a word list for sentiment analysis in microblogs" (2011);
Hutto and Gilbert, "VADER" (ICWSM 2014).
"""

from __future__ import annotations

import functools
import importlib.resources
from typing import NamedTuple

import numpy as np

__all__ = ["Vocabulary", "load_vocabulary", "MAX_VOCABULARY"]

# Size of wordfreq's 'en' list (wordfreq 3.x, 'best' word list).
MAX_VOCABULARY = 319_938

_INSTALL = (
    'the real-vocabulary data needs the optional packages wordfreq, afinn and vaderSentiment: pip install -e ".[data]"'
)


class Vocabulary(NamedTuple):
    """Top-``k`` English words with a unigram reference and two valence rewards.

    Attributes:
      words: the words, most frequent first (tuple of ``k`` strings).
      p: renormalised unigram probabilities (float64, shape ``(k,)``, sums to 1).
      afinn: AFINN-165 valence, integers ``-5..5`` as float64 (0 if absent).
      vader: VADER mean valence rounded to one decimal (0 if absent).
      left_out: wordfreq frequency mass of all other words, ``1 - Σ f`` (>= 0).
    """

    words: tuple
    p: np.ndarray
    afinn: np.ndarray
    vader: np.ndarray
    left_out: float


def _require():
    try:
        import afinn  # noqa: F401
        import vaderSentiment  # noqa: F401
        import wordfreq
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError(_INSTALL) from exc
    return wordfreq


@functools.lru_cache(maxsize=1)
def afinn_lexicon() -> dict:
    """AFINN-165 word -> integer valence, from the ``afinn`` package's bundled file."""
    _require()
    text = importlib.resources.files("afinn").joinpath("data", "AFINN-en-165.txt").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if "\t" in line:
            word, score = line.rsplit("\t", 1)
            out[word.strip()] = int(score)
    return out


@functools.lru_cache(maxsize=1)
def vader_lexicon() -> dict:
    """VADER word -> mean valence rounded to one decimal, from ``vaderSentiment``'s bundled file."""
    _require()
    text = importlib.resources.files("vaderSentiment").joinpath("vader_lexicon.txt").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out[parts[0].strip()] = round(float(parts[1]), 1)
    return out


@functools.lru_cache(maxsize=8)
def _load(k: int) -> Vocabulary:
    wordfreq = _require()
    words = tuple(wordfreq.top_n_list("en", k))
    if len(words) < k:
        raise ValueError(f"k = {k} exceeds the English vocabulary size of wordfreq ({len(words)} words)")
    f = np.array([wordfreq.word_frequency(w, "en") for w in words], dtype=np.float64)
    total = float(f.sum())
    af, vd = afinn_lexicon(), vader_lexicon()
    afinn = np.array([af.get(w, 0) for w in words], dtype=np.float64)
    vader = np.array([vd.get(w, 0.0) for w in words], dtype=np.float64)
    for a in (f, afinn, vader):
        a.setflags(write=False)
    p = f / total
    p.setflags(write=False)
    return Vocabulary(words, p, afinn, vader, max(0.0, 1.0 - total))


def load_vocabulary(k: int = 20_000) -> Vocabulary:
    r"""Top-``k`` English unigram model with AFINN and VADER valence rewards.

    ``p(w) = f(w) / Σ_{top k} f`` with ``f`` the ``wordfreq`` frequency
    (``word_frequency(w, "en")``); ``left_out = 1 - Σ_{top k} f`` is the
    frequency mass of the words not kept (about 7% at ``k = 20 000``).
    Cached per ``k`` after the first load (about 0.3 s); arrays are read-only.
    A sentence of ``n`` words from ``p^n`` with reward ``afinn`` or ``vader``
    is a memoryless model (THEORY.md §1, §7) whose push-forward has 11 (AFINN)
    or about 70 (VADER) levels.

    Args:
      k: number of words, ``1 <= k <= MAX_VOCABULARY``.

    Returns:
      :class:`Vocabulary` ``(words, p, afinn, vader, left_out)``.

    Raises:
      ImportError: without the optional packages (``pip install -e ".[data]"``).
      ValueError: ``k`` not an integer in ``[1, MAX_VOCABULARY]``.

    >>> import asymalign as aa
    >>> v = aa.load_vocabulary(1000)
    >>> len(v.words), round(float(v.p.sum()), 12), v.words[0]
    (1000, 1.0, 'the')
    >>> float(v.afinn[v.words.index("good")]), float(v.vader[v.words.index("good")])
    (3.0, 1.9)
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 1 <= k <= MAX_VOCABULARY:
        raise ValueError(f"k must be an integer in [1, {MAX_VOCABULARY}] (the wordfreq English list), got {k!r}")
    return _load(int(k))
