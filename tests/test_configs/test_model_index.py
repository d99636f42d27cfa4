"""model-index.yml and configs/*/metafile.yml list every config, correctly.

openmim reads them with the ``model-index`` package; the same reader is
used here, so a metafile openmim would reject fails this test.
"""
import copy
import inspect
import json
from pathlib import Path

import pytest
import torch
import yaml
from testing_utils import cpu_config, load_tool

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


@pytest.fixture(scope='module')
def tool_index():
    """tools/misc/update_model_index.py and the index it builds (every
    config loaded once)."""
    tool = load_tool('tools/misc/update_model_index.py')
    with open(ROOT / tool.COMPLEXITY) as f:
        complexity = json.load(f)['configs']
    return tool, tool.build_index(complexity)


def _block(path: str, markers: tuple) -> str:
    start, end = markers
    text = (ROOT / path).read_text()
    return text.split(start, 1)[1].split(end, 1)[0].strip()


def test_zoo_blocks_are_the_tools_output(tool_index):
    """docs/model_zoo.md's tables and README's summary are what the tool
    writes: without a landed GPU result neither has a GPU column, and no
    column of either is empty everywhere."""
    tool, index = tool_index
    landed = ROOT / tool.GPU_RESULT
    result = tool.load_gpu_result(str(landed)) if landed.exists() else None
    index = copy.deepcopy(index)
    tool.apply_gpu_result(index, result)
    tables = _block(tool.ZOO_FILE, tool.ZOO_MARKERS)
    summary = _block(tool.README, tool.SUMMARY_MARKERS)
    assert tables == tool.zoo_tables(index).strip()
    assert summary == tool.zoo_summary(index).strip()
    if result is None:
        assert 'GPU train-step overhead' not in tables + summary
        assert 'not measured' not in tables + summary
    for table in (tables + '\n\n' + summary).split('\n\n'):
        rows = [line.strip('|').split(' | ') for line in table.splitlines()
                if line.startswith('| ') and not line.startswith('| config')
                and not line.startswith('| architecture')]
        for column in zip(*rows):
            assert set(map(str.strip, column)) - set(tool.EMPTY_CELLS)


def test_readme_summary_links_every_architecture_to_its_table(tool_index):
    """One summary row per architecture, linked to its heading in
    docs/model_zoo.md, with the count of its configs."""
    tool, index = tool_index
    summary = tool.zoo_summary(index)
    headings = (ROOT / tool.ZOO_FILE).read_text()
    for folder, meta in index.items():
        if folder == 'demo':
            continue
        name = tool.ARCHS[folder][0]
        assert f'### {name}\n' in headings
        (row, ) = [line for line in summary.splitlines()
                   if line.startswith(f'| [{name}](docs/model_zoo.md#')]
        assert f' | {len(meta["Models"])} | ' in row
    assert '[Faster R-CNN](docs/model_zoo.md#faster-r-cnn)' in summary
    assert ('| ECA ResNet-50/101: box AP, mask AP (ECA-Net README) |'
            in summary)


def _gpu_result(tool):
    """A synthetic gpu_check result (not a measurement): distinct
    overheads per attention, input and precision."""
    rows = []
    for arch, inp, size in (('r50', 'det', [2, 3, 800, 1344]),
                            ('r50-v1c', 'seg', [8, 3, 512, 512])):
        for i, name in enumerate(['R50'] + list(tool.GPU_ATTENTIONS)):
            for precision, extra in (('fp32', 0.), ('amp', 0.5)):
                value = 0. if name == 'R50' else (i + extra) / 100 + (
                    0.1 if inp == 'seg' else 0.)
                model = name if name == 'R50' else f'{name} mmsa'
                rows.append(dict(input=inp, size=size, arch=arch,
                                 model=model, precision=precision,
                                 train_overhead=[0., value, 0.]))
            rows.append(dict(input=inp, size=size, arch=arch,
                             model=f'{name} official', precision='fp32',
                             train_overhead=[0., 9., 0.]))
    return dict(tool='gpu_check', cuda=True, date='2026-12-07T12:00:00',
                machine=dict(gpu='Synthetic GPU', torch='2.11', triton='3.6',
                             cuda_version='13.0'),
                command='python tools/gpu_check.py', headline='headline',
                tests=dict(passed=1, failed=0, errors=0, skipped=0),
                benchmark=dict(det=dict(backbones=rows[:len(rows) // 2]),
                               seg=dict(backbones=rows[len(rows) // 2:])))


def test_gpu_column_is_filled_for_the_measured_backbones_only(tool_index):
    """A GPU result fills the column (and the metafile) of every config
    whose backbone and attention the check measured at its input, naming
    the GPU; R101, VAN, GC and the attention on FPN outputs stay 'not
    measured'."""
    tool, index = tool_index
    index = copy.deepcopy(index)
    filled = tool.apply_gpu_result(index, _gpu_result(tool))
    models = {m['Name']: m for meta in index.values() for m in meta['Models']}
    cells = {name: m['_gpu'] for name, m in models.items()}
    # SA is attention 1 of the synthetic rows: +1.0% fp32, +1.5% amp (det)
    assert cells['faster-rcnn_r50-sa_fpn_1x_coco'] == (
        '+1.0% fp32, +1.5% fp16 autocast (Synthetic GPU)')
    assert cells['mask-rcnn_r50-eca_fpn_1x_coco'] == (
        '+3.0% fp32, +3.5% fp16 autocast (Synthetic GPU)')
    assert cells['retinanet_r50-cbam_fpn_1x_coco'].startswith('+5.0% fp32')
    assert cells['upernet_r50-se_4xb4-160k_ade20k-512x512'] == (
        '+12.0% fp32, +12.5% fp16 autocast (Synthetic GPU)')
    for name in ('faster-rcnn_r101-sa_fpn_1x_coco',
                 'faster-rcnn_r50_fpn-sa_1x_coco',
                 'faster-rcnn_r50-gc_fpn_1x_coco',
                 'upernet_r101-sa_4xb4-160k_ade20k-512x512',
                 'mask-rcnn_van-b0_fpn_1x_coco',
                 'faster-rcnn_r18-sa_fpn_demo'):
        assert cells[name] == 'not measured', name
    # 3 detectors x 5 attentions + UperNet R50 x 4 attentions x 2 schedules
    assert filled == 15 + 8
    meta = models['faster-rcnn_r50-sa_fpn_1x_coco']['Metadata']
    assert meta['GPU Train-Step Overhead']['fp32'] == '+1.0%'
    assert meta['GPU Train-Step Overhead']['GPU'] == 'Synthetic GPU'
    assert '2x3x800x1344' in meta['GPU Train-Step Overhead']['Measured']
    assert 'GPU Train-Step Overhead' not in models[
        'faster-rcnn_r101-sa_fpn_1x_coco']['Metadata']
    table = tool.zoo_tables(index)
    assert ('| SA | 41.75 | 207.1 | +1.0% fp32, +1.5% fp16 autocast '
            '(Synthetic GPU) |') in table
    assert '| not measured |' in table  # kept where a row has a value
    summary = tool.zoo_summary(index)
    assert 'GPU train-step overhead' in summary.splitlines()[0]
    # R50 x SA, SE, ECA, SGE, CBAM; UperNet R50 x 4 x 2 schedules; no VAN
    assert '| 13 | 5 of 13 configs (Synthetic GPU) |' in summary
    assert '| 16 | 8 of 16 configs (Synthetic GPU) |' in summary
    assert '| 12 | not measured |' in summary
    section = tool.gpu_section(_gpu_result(tool))
    assert '| SA | +1.0% / +1.5% | +11.0% / +11.5% |' in section


def test_the_benchmark_builds_the_attentions_the_zoo_names():
    """GPU_ATTENTIONS (the configs a result may fill) are the benchmark's
    settings: the modules' defaults, ECA's kernel sizes by stage."""
    tool = load_tool('tools/misc/update_model_index.py')
    bench = load_tool('tools/analysis_tools/benchmark_attention.py')
    assert set(tool.GPU_ATTENTIONS) == set(bench.ATTENTIONS)
    sizes = [bench.attention_options('ECA', c)['kernel_size']
             for c in (256, 512, 1024, 2048)]
    assert tool.GPU_ATTENTIONS['ECA'] == 'ECA (kernel_size={})'.format(
        ','.join(map(str, sizes)))
    for name in ('SA', 'SE', 'SGE', 'CBAM'):  # the configs name no option
        defaults = {k: p.default for k, p in inspect.signature(
            bench.ATTENTION[name][0]).parameters.items()}
        for c in (256, 512, 1024, 2048):
            assert all(defaults[k] == v for k, v in
                       bench.attention_options(name, c).items())
        assert tool.GPU_ATTENTIONS[name] == name
