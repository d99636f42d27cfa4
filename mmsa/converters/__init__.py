"""Convert ImageNet checkpoints of attention ResNets into mmsa backbones.

One module per source family holds its naming; :data:`SOURCES` maps the
``--from`` names of ``tools/model_converters/convert_weights.py`` to them.
A new family adds its :class:`~mmsa.converters.base.SourceSpec` here.

Example:
    >>> from mmsa.converters import convert
    >>> from mmsa.utils import safe_load
    >>> sd, meta, report = convert('sa-net', safe_load('sa_resnet50.pth.tar'))
    >>> print(report.format())
"""
from typing import Any, Dict, Optional, Tuple, Union

from .base import (ConversionError, ConversionReport, DeepStemError,
                   ShapeMismatchError, SourceSpec, Tensors, WrongSourceError,
                   convert_with, extract_state_dict)
from .eca_net import ECA_NET
from .sa_net import SA_NET
from .seresnet import MMPRETRAIN_SERESNET, TIMM_SERESNET
from .torchvision import TORCHVISION

SOURCES: Dict[str, SourceSpec] = {
    spec.name: spec
    for spec in (SA_NET, ECA_NET, TIMM_SERESNET, MMPRETRAIN_SERESNET,
                 TORCHVISION)
}

__all__ = [
    'SOURCES', 'convert', 'ConversionError', 'WrongSourceError',
    'ShapeMismatchError', 'DeepStemError', 'ConversionReport', 'SourceSpec',
    'extract_state_dict'
]


def convert(
    source: str,
    checkpoint: Any,
    depth: Optional[int] = None,
    target: str = 'resnet',
    attention: Optional[Union[str, dict, list]] = None
) -> Tuple[Tensors, dict, ConversionReport]:
    """Rename a source checkpoint's tensors to an mmsa ``AttnResNet``'s.

    The depth and the attention (type, per-stage options such as SA's
    groups or ECA's kernel sizes, all blocks or only the last) are read from
    the tensors; the backbone they describe is built and every tensor checked
    against it by name and shape.

    Args:
        source (str): A key of :data:`SOURCES`.
        checkpoint: The loaded file: a state dict, or a dict holding one
            under ``state_dict``/``model``; ``module.`` prefixes are removed.
        depth (int, optional): Expected ResNet depth; checked against the
            tensors. Defaults to None (read from them).
        target (str): ``'resnet'`` (7x7 stem: mmdet ``AttnResNet``, mmseg
            ``AttnResNetSeg``) or ``'v1c'`` (deep stem, refused with the
            reasons and the recommended path). Defaults to ``'resnet'``.
        attention (str | dict | list, optional): Attention of the target for
            a plain ResNet source; it keeps its paper initialisation.
            Defaults to None.

    Returns:
        tuple: The backbone state dict (no ``backbone.`` prefix), the
        ``meta`` to save with it (``mmsa_converted_from``, the ``backbone``
        config, ``eca_kernel_sizes`` for ECA-Net) and the report.

    Raises:
        WrongSourceError: The keys are not ``source``'s naming.
        ShapeMismatchError: A tensor does not fit; the message names the key
            and both shapes.
        DeepStemError: ``target='v1c'``; the message says what maps and the
            recommended path.
        ConversionError: Any other misfit (unknown depth, extra tensors).
    """
    if source not in SOURCES:
        raise ConversionError(f'unknown source {source!r}; choose one of '
                              f'{", ".join(SOURCES)}')
    return convert_with(SOURCES[source], checkpoint, depth, target, attention)
