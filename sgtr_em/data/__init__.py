"""Data: the data directory and downloads, EM datasets, system prompts, SGTR pairs, generated summaries."""
