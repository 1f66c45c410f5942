"""Runners: generation (prompts -> pipeline -> scores), decomposition (DAVIS layout), score (existing outputs)."""
