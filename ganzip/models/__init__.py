"""The generator zoo: `create(name, **opts)` builds any registered model.

Generators: resnet_6blocks, resnet_9blocks, unet_128, unet_256, mobile_resnet_9blocks.
Discriminator: patchgan.
`build(arch, opts)` builds any architecture name ganzip accepts (zoo, `module:callable`, `spandrel/ID`).
"""
from . import discriminator, mobile, resnet, unet  # noqa: F401  (registration)
from .arch import SPANDREL_PREFIX, build
from .init import init_weights
from .layers import NORMS
from .registry import create, list_models, model_options, register_model

__all__ = ["build", "SPANDREL_PREFIX", "create", "list_models", "model_options", "register_model", "init_weights", "NORMS"]
