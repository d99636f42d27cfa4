"""Official VAN ImageNet checkpoints -> :class:`mmsa.models.VAN` weights."""
from collections import OrderedDict
from typing import Dict, Mapping

import torch

from .base import WrongSourceError

# The classifier of VAN-Classification; a detection/segmentation backbone
# has no use for it.
_DROPPED_PREFIXES = ('head.', )


def convert_van(
        state_dict: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Map an official VAN checkpoint's keys to :class:`mmsa.models.VAN`.

    The official ``van_b{0-3}`` checkpoints (Visual-Attention-Network/
    VAN-Classification, ``*.pth.tar``) are ``{'state_dict': {...}, ...}``;
    mmsa's VAN keeps every official module name (``patch_embed{i}``,
    ``block{i}.{j}.attn.spatial_gating_unit.conv0`` ...), so the conversion
    only unwraps the ``state_dict`` nesting, strips the ``module.`` prefix
    that ``DistributedDataParallel`` checkpoints carry, and drops the
    classifier ``head.*``.

    Args:
        state_dict (Mapping): The loaded checkpoint, nested or not.

    Returns:
        dict: Keys (in the checkpoint's order) and tensors, loadable into
        ``VAN`` with ``strict=True``.

    Raises:
        WrongSourceError: The checkpoint is no VAN (a ``ValueError``).
    """
    if 'state_dict' in state_dict and isinstance(state_dict['state_dict'],
                                                 Mapping):
        state_dict = state_dict['state_dict']
    converted = OrderedDict()
    for key, value in state_dict.items():
        if key.startswith('module.'):
            key = key[len('module.'):]
        if key.startswith(_DROPPED_PREFIXES):
            continue
        converted[key] = value
    if 'patch_embed1.proj.weight' not in converted:
        raise WrongSourceError(
            'convert_van: no patch_embed1.proj.weight among the keys '
            f'(first ones: {list(converted)[:5]}); expected an official '
            'VAN-Classification checkpoint such as van_base_828.pth.tar')
    return converted
