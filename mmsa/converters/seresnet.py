"""SE-ResNet checkpoints in timm's and in mmpretrain's naming.

timm (``timm/models/resnet.py``, ``seresnet50``): torchvision names plus
``layerS.B.se.fc{1,2}.{weight,bias}``, 1x1 convs with bias, the names of
:class:`~mmsa.attention.SqueezeExcitation`; ``fc.*`` is the classifier.

mmpretrain (``SEResNet``): every backbone key under ``backbone.``, the SE
layer as ``se_layer.conv{1,2}.conv.{weight,bias}`` (mmcv ``ConvModule``),
the classifier as ``head.fc.*``. A plain mmpretrain ``ResNet`` (no
``se_layer``) converts too.

Both round the hidden width to a multiple of 8; for the ResNet widths that
is still ``C / r``, which the reduction is read from.
"""
from .base import ConversionError, SourceSpec, Tensors


def read_se(tensors: Tensors, channels: int) -> dict:
    """``reduction = C / hidden`` from the squeeze conv's weight."""
    hidden = tensors['fc1.weight'].shape[0]
    if channels % hidden:
        raise ConversionError(
            f'SE with {channels} channels squeezed to {hidden}: {channels} '
            f'is not a multiple of {hidden}, so no reduction gives this width')
    return dict(type='SE', reduction=channels // hidden)


TIMM_SERESNET = SourceSpec(name='timm-seresnet',
                           title='timm SE-ResNet (timm/models/resnet.py)',
                           signature=r'^layer\d+\.\d+\.se\.fc1\.weight$',
                           attention='se',
                           read_attention=read_se)

MMPRETRAIN_SERESNET = SourceSpec(
    name='mmpretrain-seresnet',
    title='mmpretrain SE-ResNet/ResNet (open-mmlab/mmpretrain)',
    signature=r'^backbone\.layer\d+\.\d+\.conv1\.weight$',
    drop=(r'^head\.', r'^neck\.'),
    renames=((r'^backbone\.', ''), (r'\.se_layer\.conv1\.conv\.', '.se.fc1.'),
             (r'\.se_layer\.conv2\.conv\.', '.se.fc2.')),
    attention='se',
    read_attention=read_se)
