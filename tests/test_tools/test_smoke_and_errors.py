"""tools/train.py --smoke, and config errors before the environment dump."""
import inspect
import sys
from pathlib import Path

import pytest

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')

from mmengine.config import Config  # noqa: E402
from mmengine.runner import IterBasedTrainLoop  # noqa: E402

from mmsa.engine.model_check import check_model  # noqa: E402
from mmsa.engine.smoke import SMOKE_VAL_IMAGES, make_smoke  # noqa: E402
from mmsa.errors import ConfigError  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / 'tests' / 'test_e2e'))
from e2e_utils import DET_CONFIGS, SEG_CONFIG, run_tool  # noqa: E402

COCO_CONFIG = (ROOT / 'configs' / 'mask_rcnn' /
               'mask-rcnn_r50-sa_fpn_1x_coco.py')


@pytest.mark.parametrize('path', [DET_CONFIGS['faster_rcnn'], SEG_CONFIG,
                                  COCO_CONFIG], ids=lambda p: p.name)
def test_smoke_turns_any_config_into_a_few_iterations(path):
    cfg = Config.fromfile(str(path))
    batch = cfg.train_dataloader.batch_size
    make_smoke(cfg, 3)
    assert cfg.train_cfg == dict(type='IterBasedTrainLoop', max_iters=3,
                                 val_interval=3)
    loop_args = inspect.signature(IterBasedTrainLoop).parameters
    assert set(cfg.train_cfg) - {'type'} <= set(loop_args)
    assert cfg.train_dataloader.dataset.indices == 3 * batch
    assert cfg.val_dataloader.dataset.indices == SMOKE_VAL_IMAGES
    assert cfg.test_dataloader.dataset.indices == SMOKE_VAL_IMAGES
    assert cfg.default_hooks.checkpoint.by_epoch is False
    assert cfg.log_processor.by_epoch is False


def test_smoke_needs_a_positive_iteration_count():
    cfg = Config.fromfile(str(DET_CONFIGS['faster_rcnn']))
    with pytest.raises(ConfigError, match='--smoke 0: give a positive'):
        make_smoke(cfg, 0)


def test_check_model_raises_the_config_error_and_names_the_block():
    cfg = Config.fromfile(str(DET_CONFIGS['faster_rcnn']))
    cfg.model.backbone.attention = dict(type='SA', groups=7)
    with pytest.raises(ConfigError, match=r'^layer1\.0, after_conv3 \(32 '
                       r'channels\): SA\(in_channels=32, groups=7\)'):
        check_model(cfg)
    cfg.model.backbone.attention = dict(type='SA', groups=8)
    check_model(cfg)  # the demo's own setting builds


@pytest.mark.parametrize('options,message', [
    (dict(attention=None, attention_position='after_conv2'),
     r"^attention_position='after_conv2' is set but attention is None"),
    (dict(attention=None, attention_blocks='last'),
     r"^attention_blocks='last' is set but attention is None"),
    (dict(attention_stages='FFFF'),
     r"^attention_stages='FFFF' selects no stage"),
])
def test_backbone_options_that_would_do_nothing_are_refused(options,
                                                            message):
    cfg = Config.fromfile(str(DET_CONFIGS['faster_rcnn']))
    cfg.model.backbone.update(options)
    with pytest.raises(ConfigError, match=message):
        check_model(cfg)


def test_neck_groups_written_in_the_config_that_do_not_fit_are_refused():
    cfg = Config.fromfile(str(DET_CONFIGS['faster_rcnn']))
    cfg.model.neck = dict(type='AttnNeck', neck=cfg.model.neck,
                          attention=dict(type='SA', groups=64))
    with pytest.raises(ConfigError, match=(
            r'^AttnNeck level 0 \(64 channels\): SA\(in_channels=64, '
            r'groups=64\): in_channels must be divisible by 2\*groups=128; '
            r'try groups=32$')):
        check_model(cfg)
    cfg.model.neck.attention = dict(type='SA')  # the default may adapt
    check_model(cfg)


def test_a_bug_in_a_constructor_is_left_to_the_runner(monkeypatch):
    """A KeyError inside a model's constructor is no config mistake: the
    check passes it by, and the runner's build shows its traceback."""
    from mmdet.models.necks import FPN

    def broken_init(self, *args, **kwargs):
        return {}['missing']

    monkeypatch.setattr(FPN, '__init__', broken_init)
    cfg = Config.fromfile(str(DET_CONFIGS['faster_rcnn']))
    assert check_model(cfg) is None


def test_config_error_comes_before_the_environment_dump(tmp_path):
    result = run_tool([
        'tools/train.py', str(DET_CONFIGS['faster_rcnn']), '--work-dir',
        str(tmp_path / 'w'), '--attention', "dict(type='SA', groups=7)"
    ], timeout=300)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines()
              if line.startswith('error:')]
    assert errors == [
        'error: ConfigError: layer1.0, after_conv3 (32 channels): '
        'SA(in_channels=32, groups=7): in_channels must be divisible by '
        '2*groups=14; try groups=4 or 8'
    ], result.stderr[-2000:]
    # mmengine's Runner logs "System environment" and the config first
    assert 'System environment' not in result.stdout + result.stderr
    assert result.stderr.count('pkg_resources is deprecated') <= 1
