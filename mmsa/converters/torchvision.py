"""torchvision ResNets (``resnet50-0676ba61.pth`` and the open-mmlab mirrors
of them with the same names).

A plain state dict whose names mmdet's ResNet shares; only ``fc.*`` goes.
Any attention in the target backbone starts from its paper initialisation.
"""
from .base import SourceSpec

TORCHVISION = SourceSpec(
    name='torchvision',
    title='torchvision ResNet',
    signature=r'^layer1\.0\.conv1\.weight$',
    # A block child other than conv/bn/downsample is some attention.
    rejects=r'^layer\d+\.\d+\.(?!(conv|bn)\d+\.|downsample\.)')
