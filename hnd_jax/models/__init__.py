"""Flax NNX face architectures with PyTorch module names, and layer capture (DESIGN.md §3)."""
