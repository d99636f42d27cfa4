"""What every source converter shares: the spec of a source's naming, the
conversion into an mmsa ``AttnResNet`` state dict and its report."""
import re
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, List, Mapping, Optional, Sequence,
                    Tuple, Union)

import torch
import torch.nn as nn

from ..errors import CheckpointMismatchError
from ..utils.checkpoint import attention_modules_without_weights

__all__ = [
    'ConversionError', 'WrongSourceError', 'ShapeMismatchError',
    'DeepStemError', 'SourceSpec', 'ConversionReport', 'extract_state_dict',
    'convert_with'
]

Tensors = Dict[str, torch.Tensor]
# (tensors of one attention module keyed by their local name, e.g.
# ``{'conv.weight': ...}``, the channels it gates) -> its mmsa config
AttentionReader = Callable[[Tensors, int], dict]


class ConversionError(CheckpointMismatchError):
    """A checkpoint that cannot become the requested backbone."""


class WrongSourceError(ConversionError):
    """The checkpoint's naming is not the one of the named source."""


class ShapeMismatchError(ConversionError):
    """A converted tensor's shape differs from the backbone's."""


class DeepStemError(ConversionError):
    """7x7-stem ImageNet weights requested for a deep-stem (V1c) backbone."""


@dataclass(frozen=True)
class SourceSpec:
    """How one family of checkpoints names a ResNet and its attention.

    Args:
        name (str): The ``--from`` name, e.g. ``'sa-net'``.
        title (str): Where such files come from, for messages.
        signature (str): Regex that at least one key of such a checkpoint
            matches (after ``module.`` is stripped).
        rejects (str, optional): Regex that no key of such a checkpoint
            matches. Defaults to None.
        drop (Sequence[str]): Regexes of keys to leave out (the classifier
            head). Defaults to ``('^fc\\.',)``.
        renames (Sequence[Tuple[str, str]]): ``re.sub`` pattern and
            replacement, applied in order, from the source's key to ours.
            Defaults to none (the torchvision names mmdet uses too).
        attention (str, optional): Attribute name of the attention in our
            blocks once renamed (``'sa'``, ``'eca'``, ``'se'``); None for a
            plain ResNet source. Defaults to None.
        read_attention (callable, optional): Builds the attention config of
            a stage from its first module's tensors. Defaults to None.
        extra_meta (callable, optional): Extra entries for the converted
            file's ``meta`` from the per-stage attention configs.
            Defaults to None.
    """

    name: str
    title: str
    signature: str
    rejects: Optional[str] = None
    drop: Sequence[str] = (r'^fc\.', )
    renames: Sequence[Tuple[str, str]] = ()
    attention: Optional[str] = None
    read_attention: Optional[AttentionReader] = None
    extra_meta: Optional[Callable[[List[Optional[dict]]], dict]] = None

    def matches(self, keys: Sequence[str]) -> bool:
        """Whether ``keys`` look like this source's checkpoint."""
        if not any(re.search(self.signature, k) for k in keys):
            return False
        return self.rejects is None or not any(
            re.search(self.rejects, k) for k in keys)

    def rename(self, key: str) -> Optional[str]:
        """Our name for the source's ``key``; None if it is dropped."""
        if any(re.search(p, key) for p in self.drop):
            return None
        for pattern, repl in self.renames:
            key = re.sub(pattern, repl, key)
        return key


@dataclass
class ConversionReport:
    """What a conversion did, tensor by tensor."""

    source: str
    target: str
    converted: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)
    attention_at_init: List[str] = field(default_factory=list)

    def format(self) -> str:
        """The summary the converter prints."""

        def names(keys: List[str], limit: int = 8) -> str:
            if not keys:
                return ''
            more = f', ... (+{len(keys) - limit})' if len(keys) > limit \
                else ''
            return ': ' + ', '.join(keys[:limit]) + more

        lines = [
            f'{self.source} -> {self.target}',
            f'  converted {len(self.converted):5d} tensors',
            f'  dropped   {len(self.dropped):5d} tensors'
            f'{names(self.dropped)}',
            f'  missing   {len(self.missing):5d} tensors'
            f'{names(self.missing)}',
        ]
        if self.attention_at_init:
            lines.append(
                f'  {len(self.attention_at_init)} attention modules keep '
                f'their paper initialisation{names(self.attention_at_init)}')
        return '\n'.join(lines)


def extract_state_dict(checkpoint: Any) -> Tensors:
    """The tensors of a loaded checkpoint: its ``state_dict`` (mmengine,
    SA-Net, ECA-Net ``.pth.tar``) or ``model`` entry if any, else the dict
    itself, with DataParallel's ``module.`` prefix removed."""
    if not isinstance(checkpoint, Mapping):
        raise ConversionError(
            f'expected a checkpoint dict, got {type(checkpoint).__name__}')
    for key in ('state_dict', 'model'):
        if isinstance(checkpoint.get(key), Mapping):
            checkpoint = checkpoint[key]
            break
    tensors = {
        re.sub(r'^module\.', '', k): v
        for k, v in checkpoint.items() if isinstance(v, torch.Tensor)
    }
    if not tensors:
        raise ConversionError(
            f'the checkpoint holds no tensors (top-level keys: '
            f'{sorted(checkpoint)[:8]})')
    return tensors


def _stage_blocks(keys: Sequence[str]) -> Tuple[Tuple[int, ...], bool]:
    """Blocks per stage and whether the blocks are bottlenecks."""
    blocks: Dict[int, set] = {}
    for key in keys:
        found = re.match(r'layer(\d+)\.(\d+)\.', key)
        if found:
            blocks.setdefault(int(found.group(1)),
                              set()).add(int(found.group(2)))
    stages = tuple(len(blocks[s]) for s in sorted(blocks))
    bottleneck = any(re.match(r'layer\d+\.\d+\.conv3\.', k) for k in keys)
    return stages, bottleneck


def _infer_depth(keys: Sequence[str], depth: Optional[int],
                 arch_settings: dict) -> int:
    stages, bottleneck = _stage_blocks(keys)
    expansion = 4 if bottleneck else 1
    found = [
        d for d, (block, blocks) in arch_settings.items()
        if tuple(blocks) == stages and block.expansion == expansion
    ]
    if not found:
        raise ConversionError(
            f'the checkpoint has {stages} blocks per stage '
            f'({"bottleneck" if bottleneck else "basic"} blocks), which is '
            f'no ResNet depth of {sorted(arch_settings)}')
    if depth is not None and depth != found[0]:
        raise ConversionError(
            f'the checkpoint is a ResNet-{found[0]} ({stages} blocks per '
            f'stage) but depth={depth} was requested; drop --depth or '
            f'pass --depth {found[0]}')
    return found[0]


def _read_attention(spec: SourceSpec, tensors: Tensors,
                    stages: Tuple[int, ...]) -> Dict[str, Any]:
    """``attention`` and ``attention_blocks`` of AttnResNet from the
    tensors: per stage, the config read from its first attention module,
    and whether all blocks or only the last carry one."""
    cfgs: List[Optional[dict]] = []
    blocks: List[str] = []
    for s, n in enumerate(stages, 1):
        with_attn = sorted({
            int(m.group(1))
            for m in (re.match(rf'layer{s}\.(\d+)\.{spec.attention}\.', k)
                      for k in tensors) if m
        })
        if not with_attn:
            cfgs.append(None)
            blocks.append('all')
            continue
        if with_attn not in (list(range(n)), [n - 1]):
            raise ConversionError(
                f'stage {s} has {spec.attention} attention in blocks '
                f'{with_attn} of {n}; mmsa backbones put it in all blocks '
                f'of a stage or only in the last')
        blocks.append('all' if len(with_attn) == n else 'last')
        prefix = f'layer{s}.{with_attn[0]}.{spec.attention}.'
        local = {
            k[len(prefix):]: v
            for k, v in tensors.items() if k.startswith(prefix)
        }
        norm = 'bn3' if f'layer{s}.0.bn3.weight' in tensors else 'bn2'
        channels = tensors[f'layer{s}.{with_attn[0]}.{norm}.weight'].numel()
        cfgs.append(spec.read_attention(local, channels))
    attention: Union[None, dict, List[Optional[dict]]] = cfgs
    if all(c is None for c in cfgs):
        attention = None
    elif all(c == cfgs[0] for c in cfgs):
        attention = cfgs[0]
    return dict(
        attention=attention,
        attention_blocks=blocks[0] if len(set(blocks)) == 1 else blocks,
        per_stage=cfgs)


def _backbone_class() -> type:
    try:
        from ..models.backbones.det_resnet import AttnResNet
        return AttnResNet
    except ImportError:  # mmseg only: same names with the 7x7 stem
        from ..models.backbones.seg_resnet import AttnResNetSeg
        return AttnResNetSeg


def _deep_stem_error(spec: SourceSpec, tensors: Tensors) -> DeepStemError:
    body = sum(1 for k in tensors if k.startswith('layer'))
    shape = tuple(tensors['conv1.weight'].shape)
    return DeepStemError(
        f'{spec.title} weights have a 7x7 stem (conv1.weight {shape}, '
        f'bn1), but ResNetV1c replaces it with three 3x3 convs '
        f'(stem.0/1, stem.3/4, stem.6/7: 32, 32 and 64 channels). '
        f'The {body} layer1-4 tensors would fit by shape, the stem cannot be '
        f'mapped, and layers trained on the 7x7 stem\'s features behind a '
        f'random deep stem are not an ImageNet-pretrained backbone. '
        f'Recommended: (a) AttnResNetV1c with mmseg\'s V1c ImageNet weights, '
        f"init_cfg=dict(type='Pretrained', "
        f"checkpoint='open-mmlab://resnet50_v1c'); the attention keeps its "
        f'paper initialisation (the log lists the modules); or (b) keep the '
        f"7x7 stem in mmseg: type='AttnResNetSeg' (deep_stem=False) with "
        f'this converted file (convert without --target v1c). See '
        f'docs/pretrained.md.')


def convert_with(
    spec: SourceSpec,
    checkpoint: Any,
    depth: Optional[int] = None,
    target: str = 'resnet',
    attention: Optional[Union[str, dict, list]] = None
) -> Tuple[Tensors, dict, ConversionReport]:
    """Convert ``checkpoint`` named as ``spec`` describes; see
    :func:`mmsa.converters.convert`."""
    from . import SOURCES  # the other sources, for wrong-source hints
    tensors = extract_state_dict(checkpoint)
    keys = list(tensors)
    if not spec.matches(keys):
        like = [s.name for s in SOURCES.values() if s.matches(keys)]
        hint = (f'it looks like --from {like[0]}' if like else
                f'it matches no known source ({", ".join(SOURCES)}); first '
                f'keys: {", ".join(keys[:4])}')
        raise WrongSourceError(
            f'this is not a {spec.title} checkpoint: expected a key '
            f'matching {spec.signature!r}' +
            (f' and none matching {spec.rejects!r}' if spec.rejects else '') +
            f'; {hint}')
    renamed: Tensors = {}
    dropped: List[str] = []
    for key, value in tensors.items():
        new = spec.rename(key)
        if new is None:
            dropped.append(key)
        else:
            renamed[new] = value
    if target not in ('resnet', 'v1c'):
        raise ConversionError(
            f"target={target!r} is unknown; choose 'resnet' or 'v1c'")
    if target == 'v1c' and 'conv1.weight' in renamed:
        raise _deep_stem_error(spec, renamed)

    cls = _backbone_class()
    depth = _infer_depth(list(renamed), depth, cls.arch_settings)
    stages = tuple(cls.arch_settings[depth][1])
    layout = dict(attention=None, attention_blocks='all', per_stage=[None])
    if spec.attention is not None:
        layout = _read_attention(spec, renamed, stages)
    if attention is not None:
        if layout['attention'] is not None:
            raise ConversionError(
                f'{spec.title} checkpoints carry their own attention '
                f'({layout["attention"]}); attention={attention!r} applies '
                f'only to plain ResNet sources')
        layout['attention'] = attention
    kwargs = dict(depth=depth, attention=layout['attention'])
    if layout['attention_blocks'] != 'all':
        kwargs['attention_blocks'] = layout['attention_blocks']
    try:
        model = cls(**kwargs)
    except (ValueError, TypeError, KeyError) as err:
        raise ConversionError(
            f'cannot build {cls.__name__}({kwargs}): {err}') from err
    described = f'{cls.__name__}(' + ', '.join(
        f'{k}={v!r}' for k, v in kwargs.items()) + ')'

    expected = model.state_dict()
    unexpected = [k for k in renamed if k not in expected]
    if unexpected:
        raise ConversionError(
            f'{len(unexpected)} tensors of the checkpoint have no place in '
            f'{described}: {", ".join(unexpected[:6])}'
            f'{", ..." if len(unexpected) > 6 else ""}; is --from '
            f'{spec.name} the right source?')
    mismatched = [(k, tuple(v.shape), tuple(expected[k].shape))
                  for k, v in renamed.items() if v.shape != expected[k].shape]
    if mismatched:
        raise ShapeMismatchError(
            f'{len(mismatched)} tensors do not fit {described}: ' +
            '; '.join(f'{k}: checkpoint {a} vs backbone {b}'
                      for k, a, b in mismatched[:6]))

    missing = [
        k for k in expected
        if k not in renamed and not k.endswith('num_batches_tracked')
    ]
    report = ConversionReport(
        source=spec.title,
        target=described,
        converted=list(renamed),
        dropped=dropped,
        missing=missing,
        attention_at_init=attention_modules_without_weights(model, renamed))
    meta = dict(mmsa_converted_from=spec.name,
                backbone=dict(type=cls.__name__, **kwargs))
    if spec.extra_meta is not None:
        meta.update(spec.extra_meta(layout['per_stage']))
    return renamed, meta, report
