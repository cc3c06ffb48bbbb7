"""The phantom science protocol (issue 8): does report supervision help over masks alone?

:mod:`.protocol` holds the arms, the settings and their presets, and the per-arm training data and config;
:mod:`.draws` the phantom pool, the stratified test set and the per-seed draw of mask CTs; :mod:`.extraction`
the LLM extraction of the pool's reports; :mod:`.runs` training, prediction and scoring of one (arm, seed);
:mod:`.report` results.json, results.md and the plot. ``benchmarks/bench_science.py`` schedules the runs.
"""
