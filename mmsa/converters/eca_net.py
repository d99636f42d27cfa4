"""Official ECA-Net checkpoints (BangguWu/ECANet, ``eca_resnet50_k3557``).

torchvision ResNet names plus ``layerS.B.eca.conv.weight`` of shape
``(1, 1, k)``. The released ResNet-50 used k = 3, 5, 5, 7 per stage, not the
paper's rule, so the kernel sizes are read from the tensors and recorded in
the converted file's ``meta['eca_kernel_sizes']``.
"""
from typing import List, Optional

from .base import SourceSpec, Tensors


def read_eca(tensors: Tensors, channels: int) -> dict:
    """The stage's kernel size from the conv weight's last dimension."""
    return dict(type='ECA', kernel_size=int(tensors['conv.weight'].shape[-1]))


def eca_meta(per_stage: List[Optional[dict]]) -> dict:
    return dict(eca_kernel_sizes=[
        None if cfg is None else cfg['kernel_size'] for cfg in per_stage
    ])


ECA_NET = SourceSpec(name='eca-net',
                     title='official ECA-Net (BangguWu/ECANet)',
                     signature=r'^layer\d+\.\d+\.eca\.conv\.weight$',
                     attention='eca',
                     read_attention=read_eca,
                     extra_meta=eca_meta)
