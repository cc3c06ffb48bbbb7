import re

from extract.reading.patterns import words_pattern
from schemas.vocab import GROUP_WORDS, LESION_WORDS


def test_word_patterns_written_as_tries_match_what_the_word_lists_say(tricky_texts):
    texts = [*tricky_texts, "Multiple MASSES, a mass and massive nodes", "cyst cystic cysts cystadenoma",
             "ground glass opacity; ground-glass opacities", "two-three foci", "fibroid(s)"]
    for words in (LESION_WORDS, GROUP_WORDS, ("no", "no evidence of", "nor", "not", "none")):
        flat = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True)) + r")\b",
                          re.IGNORECASE)
        trie = words_pattern(words)
        assert trie.pattern != flat.pattern
        for text in texts:
            assert [m.span() for m in trie.finditer(text)] == [m.span() for m in flat.finditer(text)], text
    mixed = words_pattern(("Ab", "ab cd"))  # not all lower-case ASCII: plain alternation, longest first
    assert mixed.pattern == r"\b(?:ab\ cd|Ab)\b" and mixed.search("AB CD").span() == (0, 5)
