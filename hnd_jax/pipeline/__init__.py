"""End-to-end dissection of models: batches -> model -> accumulators -> results (DESIGN.md §3)."""
