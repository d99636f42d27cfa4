"""model-index.yml and configs/*/metafile.yml list every config, correctly.

openmim reads them with the ``model-index`` package; the same reader is
used here, so a metafile openmim would reject fails this test.
"""
import copy
from pathlib import Path

import pytest
import torch
import yaml
from testing_utils import cpu_config

pytest.importorskip('mmdet')
pytest.importorskip('mmseg')
modelindex = pytest.importorskip('modelindex.load_model_index')

from mmengine.config import Config  # noqa: E402
from mmengine.registry import MODELS, init_default_scope  # noqa: E402

import mmsa  # noqa: E402,F401

ROOT = Path(__file__).resolve().parents[2]
ALL_CONFIGS = sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 'configs').rglob('*.py')
    if '_base_' not in p.parts)


def _models() -> list:
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    models = []
    for metafile in index['Import']:
        meta = yaml.safe_load((ROOT / metafile).read_text())
        models += meta['Models']
    return models


MODELS_LISTED = _models()


def test_every_config_is_listed_once_and_every_entry_exists():
    listed = [m['Config'] for m in MODELS_LISTED]
    assert sorted(listed) == ALL_CONFIGS
    names = [m['Name'] for m in MODELS_LISTED]
    assert len(set(names)) == len(names)
    folders = {Path(c).parts[1] for c in ALL_CONFIGS}
    index = yaml.safe_load((ROOT / 'model-index.yml').read_text())
    assert sorted(index['Import']) == sorted(
        f'configs/{f}/metafile.yml' for f in folders)


def test_openmim_reader_accepts_the_index():
    index = modelindex.load(str(ROOT / 'model-index.yml'))
    index.build_models_with_collections()
    assert index.check(silent=True) == []
    assert sorted(m.config for m in index.models) == ALL_CONFIGS
    for model in index.models:
        full = model.full_model
        assert full.metadata.training_data, model.name
        assert full.metadata.architecture, model.name
        assert full.metadata.parameters > 0, model.name
        assert full.metadata.flops > 0, model.name
        for result in full.results or []:
            assert result.metrics, model.name


@pytest.mark.parametrize('model', MODELS_LISTED,
                         ids=[m['Name'] for m in MODELS_LISTED])
def test_config_loads_and_has_the_listed_parameter_count(model):
    """The metafile's Parameters (from get_flops.py) equal the config's
    model as built now: a changed config or module shows up here. Built
    on the meta device: the count without allocating the weights."""
    cfg = Config.fromfile(str(ROOT / model['Config']))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cpu_config(copy.deepcopy(cfg.model))
    try:
        with torch.device('meta'):
            built = MODELS.build(copy.deepcopy(model_cfg))
    except NotImplementedError:  # VAN reads a tensor's value when built
        built = MODELS.build(model_cfg)
    count = sum(p.numel() for p in built.parameters())
    assert count == model['Metadata']['Parameters']
    if 'Results' in model:
        assert 'reference' in model['Results Source']
