"""End-to-end dissection of models: batches -> model -> accumulators -> results (DESIGN.md §3).

Modules, one job each:

* :mod:`~hnd_jax.pipeline.dissect` -- :func:`~hnd_jax.pipeline.dissect.dissect_model`, the driver
  behind ``hnd dissect --model`` (stages, resume, multi-host merge, results, dissection.json);
* :mod:`~hnd_jax.pipeline.model_source` -- card name or NNX module -> model, preprocessing, identity;
* :mod:`~hnd_jax.pipeline.forward` -- one jit'ed, data-sharded forward returning every requested layer;
* :mod:`~hnd_jax.pipeline.cache` -- keep activations between the passes when they fit the budget;
* :mod:`~hnd_jax.pipeline.checkpoints` / :mod:`~hnd_jax.pipeline.fingerprint` -- orbax checkpoints of
  the accumulator states and the run fingerprint that guards resuming;
* :mod:`~hnd_jax.pipeline.progress`, :mod:`~hnd_jax.pipeline.sizes` -- progress bars, ``2GiB`` parsing.
"""
