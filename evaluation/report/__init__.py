"""Reports of an evaluation run: Markdown tables, JSON, PNG plots, a contact sheet, run comparisons."""
