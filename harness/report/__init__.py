"""Across-run reporting: merge results, compare backends, flag regressions, plot, and write a Markdown report."""
