"""tools/train.py --smoke trains a few iterations and evaluates."""
import pytest
from e2e_utils import DET_CONFIGS, SEG_CONFIG, check, data_options, \
    read_json, run_tool


@pytest.mark.slow
@pytest.mark.parametrize('path,seg', [(DET_CONFIGS['faster_rcnn'], False),
                                      (SEG_CONFIG, True)],
                         ids=['faster_rcnn', 'upernet'])
def test_smoke_run_trains_and_evaluates(path, seg, tiny_data, tmp_path):
    work = tmp_path / 'smoke'
    check(run_tool(['tools/train.py', str(path), '--smoke', '2',
                    '--work-dir', str(work), '--cfg-options',
                    *data_options(tiny_data, seg=seg)]))
    state = read_json(work / 'finished.json')
    assert state['iter'] == 2
    assert state['metrics'], state
