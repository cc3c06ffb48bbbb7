"""LLM backends behind one interface (`extract.backends.base.Backend`)."""
