"""Regexes built from the word lists of `schemas.vocab`: any of a list's words as a whole word."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any


def trie(words: dict[str, str]) -> str:
    """Regex matching any of `words` (keys; lower-case ASCII), written as a trie, each word followed by its value
    (a regex: a word-end check, a named group, ...).

    At every node the longer continuations come before the word that ends there, and no two branches of a node
    can match the same character (distinct lower-case letters under IGNORECASE), so the trie finds at each
    position the same word as the alternation of the words sorted longest first, while trying a few characters
    instead of every word.
    """
    root: dict[str, dict] = {}
    for word, tail in words.items():
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = tail

    def emit(node: dict[str, Any]) -> str:
        branches = [re.escape(ch) + emit(child) for ch, child in node.items() if ch]
        if "" in node:
            branches.append(node[""])
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return emit(root)


def trie_safe(words: Iterable[str]) -> bool:
    return all(w.isascii() and w == w.lower() for w in words)


def words_alternation(words: Iterable[str]) -> str:
    """`(?:w1|w2|...)\\b`: any of `words` followed by a word boundary, longest first (as a trie when all words
    are lower-case ASCII, which is the same match, faster). Compile with IGNORECASE after a leading `\\b`."""
    words = list(words)
    if trie_safe(words):
        return trie({w: r"\b" for w in words})
    return "(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b"


def words_pattern(words: tuple[str, ...]) -> re.Pattern[str]:
    """Any of `words` as a whole word, case-insensitive (`\\b(?:longest|...|short)\\b`)."""
    return re.compile(r"\b" + words_alternation(words), re.IGNORECASE)
