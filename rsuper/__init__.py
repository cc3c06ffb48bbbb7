"""The `rsuper` command root (`rsuper.cli`), above the two halves of the pipeline: `extract` and `train`."""
