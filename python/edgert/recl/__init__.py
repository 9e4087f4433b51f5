"""RECL (Khani et al., NSDI 2023): continuous learning by reusing a shared zoo of expert models.

A controller serves many cameras. Every model-update window each camera uploads sampled frames; the
controller picks candidate experts with a gating network, checks them against the teacher (safety
checker), sends the best, and time-shares its trainer between retraining jobs with an iterative
scheduler. Promising retrained models join the zoo; experts that are rarely chosen are pruned.
"""
from __future__ import annotations
