"""Every shipped config swaps to every attention type with one key.

The swapped part (backbone, or neck for the AttnNeck configs) is built on
the meta device where it can be (VAN on the CPU): the full construction
path runs (option checks, channel checks, module tree) without allocating
or initialising weights, so the whole configs x attentions grid stays
fast.
"""
import argparse
import copy
import warnings
from pathlib import Path

import pytest
import torch
from testing_utils import cpu_config

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402

from mmsa.attention import ATTENTIONS, get_attention_class  # noqa: E402
from mmsa.engine.swap import attention_key, swap_attention  # noqa: E402

CONFIGS = Path(__file__).resolve().parents[2] / 'configs'
ALL_CONFIGS = sorted(p for p in CONFIGS.rglob('*.py')
                     if '_base_' not in p.parts)
NAMES = list(ATTENTIONS)
_loaded = {}
_built = {}


def _load(path: Path) -> Config:
    if path not in _loaded:
        _loaded[path] = Config.fromfile(str(path))
    return copy.deepcopy(_loaded[path])


def _build_part(cfg: Config, key: str) -> torch.nn.Module:
    """Build the backbone/neck that holds the attention, on meta."""
    part = cpu_config(copy.deepcopy(cfg.model[key.split('.')[1]]).to_dict())
    cache_key = (cfg.get('default_scope'), repr(part))
    if cache_key not in _built:
        init_default_scope(cfg.get('default_scope', 'mmdet'))
        try:
            with torch.device('meta'):
                _built[cache_key] = MODELS.build(copy.deepcopy(part))
        except NotImplementedError:
            # VAN reads its drop-path rates from a tensor while it is
            # built, which a meta tensor cannot give: build it for real.
            _built[cache_key] = MODELS.build(part)
    return _built[cache_key]


def _count(module: torch.nn.Module, cls: type) -> int:
    return sum(isinstance(m, cls) for m in module.modules())


def test_every_config_has_an_attention_key():
    assert len(ALL_CONFIGS) >= 60
    for path in ALL_CONFIGS:
        assert attention_key(_load(path)) in ('model.backbone.attention',
                                              'model.neck.attention'), path


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=[p.name for p in
                                                   ALL_CONFIGS])
def test_config_swaps_to_every_attention(path):
    failures = []
    for name in NAMES:
        cfg = _load(path)
        key = swap_attention(cfg, name)
        assert cfg.model[key.split('.')[1]]['attention'] == dict(type=name)
        try:
            part = _build_part(cfg, key)
        except Exception as err:  # collect all failures of this config
            failures.append(f'{name}: {type(err).__name__}: {err}')
            continue
        if _count(part, get_attention_class(name)) == 0:
            failures.append(f'{name}: built, but holds no {name} module')
    assert not failures, '\n'.join(failures)


def _cfg_options(*args: str) -> dict:
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *args]).cfg_options


DEMO = CONFIGS / 'demo' / 'faster-rcnn_r18-sa_fpn_demo.py'
SEG_DEMO = CONFIGS / 'demo' / 'upernet_r18-sa_demo.py'
VAN_DEMO = CONFIGS / 'demo' / 'faster-rcnn_van-b0_fpn_demo.py'
ECA_R50 = CONFIGS / 'faster_rcnn' / 'faster-rcnn_r50-eca_fpn_1x_coco.py'


@pytest.mark.parametrize('option', [
    'model.backbone.attention=ECA',
    "model.backbone.attention=dict(type='ECA')",
    'model.backbone.attention.type=ECA',
])
@pytest.mark.parametrize('path', [DEMO, SEG_DEMO, VAN_DEMO],
                         ids=lambda p: p.name)
def test_cfg_options_forms_a_user_types_all_swap(path, option):
    cfg = _load(path)
    cfg.merge_from_dict(_cfg_options(option))
    with warnings.catch_warnings():
        # attention.type=ECA keeps the demo's SA groups=8: a warning
        warnings.simplefilter('ignore', UserWarning)
        part = _build_part(cfg, 'model.backbone.attention')
    assert _count(part, get_attention_class('ECA')) > 0


def test_type_swap_drops_the_old_types_options_with_a_warning():
    cfg = _load(DEMO)
    cfg.merge_from_dict(_cfg_options('model.backbone.attention.type=ECA'))
    assert cfg.model.backbone.attention == dict(type='ECA', groups=8)
    _built.clear()
    with pytest.warns(UserWarning, match=r"ECA does not take groups=8 "
                      r"\(an option of SA/SGE/ULSAM\); ignored.*"
                      r'write attention=ECA'):
        _build_part(cfg, 'model.backbone.attention')


def test_an_option_no_attention_takes_is_still_an_error():
    cfg = _load(DEMO)
    swap_attention(cfg, "dict(type='ECA', kernal_size=3)")
    with pytest.raises(TypeError, match=r"ECA: unknown option\(s\) "
                       r"\['kernal_size'\]; valid options are"):
        _build_part(cfg, 'model.backbone.attention')


def test_swap_replaces_a_per_stage_list_and_can_remove_attention():
    cfg = _load(ECA_R50)
    assert isinstance(cfg.model.backbone.attention, list)
    swap_attention(cfg, "dict(type='SE', reduction=8)")
    part = _build_part(cfg, 'model.backbone.attention')
    se = [m for m in part.modules()
          if isinstance(m, get_attention_class('SE'))]
    assert len(se) == 16
    assert all(m.hidden_channels == m.in_channels // 8 for m in se)
    swap_attention(cfg, 'None')
    assert cfg.model.backbone.attention is None
    assert dict(_build_part(cfg, 'model.backbone.attention')
                .attention_summary()) == {}


def test_unfitting_default_is_lowered_but_an_explicit_value_is_kept():
    cfg = _load(DEMO)  # R18 at half width: 32 channels in stage 1
    swap_attention(cfg, 'SA')
    part = _build_part(cfg, 'model.backbone.attention')
    assert part.layer1[0].sa.groups == 16  # 64 needs 128 channels
    assert part.layer4[0].sa.groups == 64  # 256 channels: the default fits
    swap_attention(cfg, "dict(type='SA', groups=64)")
    with pytest.raises(ValueError, match=r'SA\(in_channels=32, groups=64\)'
                       r'.*try groups='):
        _build_part(cfg, 'model.backbone.attention')


def test_swap_to_none_also_removes_what_placed_the_attention():
    """GC's configs put it on stages 2-4 only; without an attention that
    mask would place nothing, which the backbone refuses."""
    cfg = _load(CONFIGS / 'faster_rcnn' / 'faster-rcnn_r50-gc_fpn_1x_coco.py')
    assert cfg.model.backbone.attention_stages == (False, True, True, True)
    with pytest.warns(UserWarning, match=(
            r'^--attention None: also removed attention_stages=\(False, '
            r'True, True, True\), which placed the removed attention$')):
        swap_attention(cfg, 'None')
    assert cfg.model.backbone.attention_stages is None
    part = _build_part(cfg, 'model.backbone.attention')
    assert part.attention_summary() == {}


def test_config_without_an_attention_slot_says_how_to_add_one():
    cfg = Config(dict(model=dict(backbone=dict(type='ResNet', depth=50),
                                 neck=dict(type='FPN'))))
    with pytest.raises(KeyError, match="no attention to swap.*AttnResNet"):
        swap_attention(cfg, 'ECA')
