"""Evaluation: generation backends, the judge, one module per evaluation, and the eval worker."""
