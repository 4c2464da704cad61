"""Flax NNX face architectures with PyTorch module names, and layer capture (DESIGN.md §3).

Modules (one job each):

- ``layers``: blocks that mirror PyTorch modules (Sequential with "0","1".. children, ReLU, PReLU,
  ceil-mode MaxPool2d, ...) and the conventions every architecture follows (NHWC inside).
- ``resnet``: ResNet-18/34/50/101/152, torchvision layout; heads ``fc``, ``mlp`` (age/gender),
  ``embedding``.
- ``iresnet``: ArcFace IResNet-18/34/50/100, insightface ``arcface_torch`` layout (112x112).
- ``vit``: timm ViT-Ti/S/B-16 and the CLIP ViT-B/16 image tower; token activations are dissected
  as maps over the patch grid (see ``capture``).
- ``inception_resnet_v1`` / ``mtcnn``: facenet-pytorch's InceptionResnetV1, PNet, RNet, ONet.
- ``demo_cnn``: the small CNN the demo trains.
- ``registry``: ``ARCHITECTURES``, ``build_model(arch, head=, num_outputs=, rngs=, **kw)`` and
  ``infer_num_outputs`` (a checkpoint's head size).
- ``capture``: ``forward_with_layers(model, x, layers)`` and ``list_layers(model, image_size)``.
- ``torch_mapping``: ``load_torch_state_dict`` / ``export_torch_state_dict`` (names and layouts).
"""

from hnd_jax.models.capture import LayerInfo, forward_with_layers, list_layers
from hnd_jax.models.registry import ARCHITECTURES, Architecture, build_model, get_architecture, infer_num_outputs
from hnd_jax.models.torch_mapping import LoadResult, export_torch_state_dict, load_torch_state_dict

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "LayerInfo",
    "LoadResult",
    "build_model",
    "export_torch_state_dict",
    "forward_with_layers",
    "get_architecture",
    "infer_num_outputs",
    "list_layers",
    "load_torch_state_dict",
]
