"""Steering: shift selected neurons at inference time and measure what flips.

- ``hooks``: the forward hooks that add +-alpha*NMD to the selected neurons (always removed);
- ``controls``: selections that should not matter (random, low-abs(r), shuffled shifts);
- ``evaluation``: steer MEM items toward GEN and back, with each control, and the side effects
  on clean inputs; flat metrics;
- ``tuning``: the (k, alpha) grid, its per-cell scores and the pick within a budget.
"""
