"""Safe import of PyTorch face checkpoints: no pickle code is ever executed (DESIGN.md §3)."""
