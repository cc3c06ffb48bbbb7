"""The `rsuper` command root (`rsuper.cli`), above the two halves of the pipeline: `extract` and `train`.

Also the anchor of the files shipped with the code: `rsuper/prompts` and `rsuper/data/demo_reports.csv` are links
into the top-level `prompts/` and `data/`, so `importlib.resources.files("rsuper")` finds them in a checkout, an
editable install and a wheel alike.
"""
