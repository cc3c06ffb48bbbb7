"""Reading report text: regex scanners over the word lists of `schemas.vocab`.

Modules, each importing only those listed before it: `patterns` (regexes from word lists), `organs` (organs a
text names), `lesion_words` (lesion, group, composition and attenuation words), `locations` (segments, parts,
side).
"""
