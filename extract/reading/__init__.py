"""Reading report text, and converting an LLM answer into a validated payload with what the text says.

Modules, each importing only those listed before it (word lists and records come from `schemas`):
`patterns` (regexes from word lists), `organs` (organs a text names), `lesion_words` (lesion, group,
composition and attenuation words), `locations` (segments, parts, side), `sentences` (sections, sentences,
clauses), `negation` (negated and history wording, lesion assertion), `quotes` (where a quote sits),
`measurements` (current sizes, groups split by size), `lesions` (drop rules and one lesion's record),
`organ_states` (organ statuses, organs the report clears), `convert` (`to_payload`).
"""
