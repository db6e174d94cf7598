"""sgtr-em: emergent misalignment x self-recognition finetuning experiments (arXiv 2606.23700)."""

__version__ = "0.1.0"
