"""tools/misc/update_model_index.py: landing a GPU check's result.

What needs every config (mmdet and mmseg) is in
tests/test_configs/test_model_index.py.
"""
import json

import pytest
from testing_utils import load_tool


def _tool():
    return load_tool('tools/misc/update_model_index.py')


def test_gpu_result_of_a_dry_run_or_another_file_is_refused(tmp_path):
    tool = _tool()
    path = tmp_path / 'r.json'
    path.write_text(json.dumps(dict(tool='gpu_check', cuda=False,
                                    machine=dict(torch='2.13.0+cpu'))))
    with pytest.raises(SystemExit, match=r'a dry run without CUDA \(torch '
                       r'2.13.0\+cpu\): it holds no GPU figure to land'):
        tool.load_gpu_result(str(path))
    path.write_text('{"ops": []}')
    with pytest.raises(SystemExit, match='not a tools/gpu_check.py result'):
        tool.load_gpu_result(str(path))
    with pytest.raises(SystemExit, match='cannot read a JSON result'):
        tool.load_gpu_result(str(tmp_path / 'missing.json'))


def test_a_marked_block_is_replaced_and_nothing_else(tmp_path):
    tool = _tool()
    start, end = tool.GPU_MARKERS
    path = tmp_path / 'doc.md'
    path.write_text(f'# Title\n\n{start}\n\nold\n\n{end}\n\nafter\n')
    assert tool.replace_block(str(path), tool.GPU_MARKERS, 'new\n')
    assert path.read_text() == f'# Title\n\n{start}\n\nnew\n\n{end}\n\nafter\n'
    once = path.read_text()
    tool.replace_block(str(path), tool.GPU_MARKERS, 'new')
    assert path.read_text() == once
    path.write_text('no block\n')
    assert not tool.replace_block(str(path), tool.GPU_MARKERS, 'new')
    assert path.read_text() == 'no block\n'


def test_without_a_result_every_gpu_figure_says_not_measured():
    tool = _tool()
    assert tool.gpu_section(None).startswith('**Not measured**')
    assert tool.gpu_overheads(dict(machine=dict(gpu='G'),
                                   benchmark={})) == {}


def test_a_column_empty_everywhere_is_left_out():
    """markdown_table, the rule of both zoo tables: a column of only 'not
    measured' or '—' is dropped, and kept once one cell holds a value."""
    tool = _tool()
    header = ['config', 'GPU', 'reference']
    rows = [['a', 'not measured', '—'], ['b', 'not measured', '—']]
    assert tool.markdown_table(header, rows) == (
        '| config |\n|---|\n| a |\n| b |')
    rows[1][1] = '+1.0% fp32 (Synthetic GPU)'
    assert tool.markdown_table(header, rows) == (
        '| config | GPU |\n|---|---|\n| a | not measured |\n'
        '| b | +1.0% fp32 (Synthetic GPU) |')
    rows[0][2] = 'box AP 38.0'
    assert tool.markdown_table(header, rows).splitlines()[0] == (
        '| config | GPU | reference |')


def test_summary_names_backbones_in_order_with_their_prefix_once():
    tool = _tool()
    assert tool.join_names(['ResNet-101', 'ResNet-50', 'ResNet-50']) == (
        'ResNet-50/101')
    assert tool.join_names(['VAN-B2', 'VAN-B0', 'VAN-B10']) == (
        'VAN-B0/B2/B10')
    assert tool.join_names(['ResNet-50', 'VAN-B0']) == 'ResNet-50, VAN-B0'
