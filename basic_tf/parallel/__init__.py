"""Parallelism policy: strategy from a flag, recompute (remat) policy, DTensor meshes."""
