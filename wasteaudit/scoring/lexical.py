"""Cheap text features every detector shares: words, content words, shingles, normal forms.

These run on every segment of every call, so they are plain regexes and set operations.
They are also the *prefilters* that decide which few texts are worth an embedding.
"""

from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from collections.abc import Iterable, Sequence

WORD_RE = re.compile(r"\w+(?:['’]\w+)*", re.UNICODE)
NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)*")
_NON_ALNUM = re.compile(r"[^\w]+", re.UNICODE)

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are aren't as at be because been before
    being below between both but by can could did do does doing down during each few for from further
    had has have having he her here hers herself him himself his how i if in into is it it's its itself
    just let me more most my myself of off on once only or other our ours ourselves out over own same
    she should so some such than that that's the their theirs them themselves then there these they this
    those through to too under until up very was we were what when where which while who whom why will
    with would you your yours yourself yourselves s t d ll re ve m o y also may might must shall us one
    get got make made use using used via per within without upon whether either neither yet ever
    really quite rather much many well way ways thing things here's there's what's let's
    please thanks thank kindly hi hello hey
    """.split()
)
NEGATIONS = frozenset(
    "not no never none nobody nothing nowhere neither nor cannot can't don't doesn't didn't isn't aren't "
    "wasn't weren't won't wouldn't shouldn't couldn't mustn't hasn't haven't hadn't without unsafe".split()
)
AFFIRMATIONS = frozenset("yes yeah yep correct true false wrong incorrect".split())


def words(text: str) -> list[str]:
    """Lower-cased word tokens (letters, digits, inner apostrophes)."""
    # The word pattern accepts both apostrophes inside a word, so replacing first splits the same way.
    return WORD_RE.findall(text.lower().replace("’", "'"))


@lru_cache(maxsize=200_000)
def stem(word: str) -> str:
    """A deliberately crude stemmer: enough to match 'tokens'/'token', 'caching'/'cache' (memoized)."""
    if len(word) <= 3 or word.isdigit():
        return word
    for suffix, keep in (("ies", "y"), ("ing", ""), ("ed", ""), ("es", ""), ("s", ""), ("ly", "")):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            if suffix == "s" and word.endswith("ss"):
                return word
            return word[: -len(suffix)] + keep
    return word


def content_words(tokens: Sequence[str]) -> list[str]:
    """Stemmed non-stopword tokens, in order."""
    return [stem(w) for w in tokens if w not in STOPWORDS and (len(w) > 1 or w.isdigit())]


def normalize(text: str) -> str:
    """Case-, punctuation- and whitespace-insensitive form used for exact-repeat hashing."""
    return _NON_ALNUM.sub(" ", text.lower()).strip()


def digest(text: str, size: int = 16) -> str:
    """A stable short hash (same value in every process, unlike ``hash()``)."""
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=size).hexdigest()


def shingles(tokens: Sequence[str], n: int = 3) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than ``n`` words is its own single shingle."""
    if len(tokens) < n:
        return {tuple(tokens)} if tokens else set()
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return len(sa & sb) / len(sa | sb)


def overlap(a: Iterable[str], b: Iterable[str]) -> float:
    """Overlap coefficient |A∩B| / min(|A|, |B|): high when one text's words sit inside the other."""
    sa, sb = set(a), set(b)
    if not sa or not sb:
        return 0.0
    return len(sa & sb) / min(len(sa), len(sb))


def numbers(text: str) -> frozenset[str]:
    return frozenset(NUMBER_RE.findall(text))


def negation_count(tokens: Sequence[str]) -> int:
    return sum(1 for w in tokens if w in NEGATIONS or w.endswith("n't"))


def seq_rep_n(tokens: Sequence[str], n: int = 4) -> float:
    """Welleck et al.'s seq-rep-n: 1 − unique n-grams / n-grams (0 for texts shorter than n)."""
    if len(tokens) < n:
        return 0.0
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    return 1.0 - len(set(grams)) / len(grams)
