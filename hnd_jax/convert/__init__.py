"""Safe import of PyTorch face checkpoints: no pickle code is ever executed (DESIGN.md §3).

Modules (imported lazily: nothing here pulls JAX until a model is built):

* :mod:`~hnd_jax.convert.torch_pickle`: ``load_torch_file(path)`` reads ``.pt/.pth`` in the zip and
  legacy formats with a restricted unpickler (tensors, storages, dicts; any other global refused);
* :mod:`~hnd_jax.convert.weights_io`: ``read_state_dict(path)`` for ``.pt/.pth/.bin``,
  ``.safetensors`` and ``.npz``, unwrapping ``state_dict``/``model`` keys and the ``module.`` prefix;
* :mod:`~hnd_jax.convert.checkpoint`: ``convert_checkpoint(card, weights, out_dir)``,
  ``load_model(card_or_name, weights)``, ``save_model(model, card, out_dir)``, ``weights_identity``;
* :mod:`~hnd_jax.convert.extract`: NCHW activations of named layers (``hnd extract``).
"""
