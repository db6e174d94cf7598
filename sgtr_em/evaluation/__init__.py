"""Evaluation: the judge, one module per evaluation, and the eval worker (model access is sgtr_em/inference/)."""
