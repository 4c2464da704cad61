"""Readable reports of dissection results: HTML per run, paper-style plots, cross-model comparison."""
