"""Official SA-Net checkpoints (wofmanaf/SA-Net, ``sa_resnet50.pth.tar``).

A ``.pth.tar`` dict whose ``state_dict`` has DataParallel's ``module.``
prefix and torchvision ResNet names, the names mmdet's ResNet uses too;
the attention is ``layerS.B.sa.{cweight,cbias,sweight,sbias,gn.weight,
gn.bias}``, the names of :class:`~mmsa.attention.ShuffleAttention`. So only
the prefix and the classifier (``fc.*``) go.
"""
from .base import SourceSpec, Tensors


def read_sa(tensors: Tensors, channels: int) -> dict:
    """``groups`` from the gate width ``k = C / (2 * groups)``."""
    k = tensors['cweight'].shape[1]
    return dict(type='SA', groups=channels // (2 * k))


SA_NET = SourceSpec(name='sa-net',
                    title='official SA-Net (wofmanaf/SA-Net)',
                    signature=r'^layer\d+\.\d+\.sa\.cweight$',
                    attention='sa',
                    read_attention=read_sa)
