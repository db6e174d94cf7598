"""Training: the LoRA SFT stage worker and the merge worker."""
