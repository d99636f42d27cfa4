"""tools/analysis_tools/benchmark_attention.py: its ratios, one quick run."""
import mmap
import os
import statistics
import subprocess
import sys

import pytest
from testing_utils import load_tool


def _load_tool():
    return load_tool('tools/analysis_tools/benchmark_attention.py')


def test_floor_ratio_is_taken_per_round():
    bench = _load_tool()
    # A tensor of a third of the probe's bytes: its floor (3 passes) equals
    # the probe copy's time in each round.
    nbytes = bench.BIG_COPY_BYTES // 3
    rounds = {'copy': [0.1, 0.2, 0.1], 'op': [0.3, 0.6, 0.9]}
    ratios = bench.floor_ratios(rounds, nbytes, ['op'])
    # per round 3x, 3x, 9x: median 3x (the ratio of the medians would be 6x)
    assert ratios['op'] == pytest.approx(3.0)
    assert statistics.median(rounds['op']) / statistics.median(
        rounds['copy']) == pytest.approx(6.0)


def test_overheads_are_quartiles_of_per_round_ratios():
    bench = _load_tool()
    rounds = {'R50': [1.0, 2.0, 1.0, 1.0, 1.0],
              'SA': [1.1, 2.0, 1.2, 1.0, 1.3]}
    q1, median, q3 = bench.overheads(rounds, 'R50')['SA']
    assert (q1, median, q3) == pytest.approx((0.0, 0.1, 0.2))


def test_steal_share_reads_the_cpu_line_of_proc_stat():
    bench = _load_tool()
    # user nice system idle iowait irq softirq steal guest guest_nice
    before = bench.cpu_steal_ticks('cpu  100 5 20 800 10 0 5 60 40 0\n')
    after = bench.cpu_steal_ticks('cpu  150 5 30 900 10 0 5 100 70 0\n')
    assert before == (60, 1000) and after == (100, 1200)
    # 40 of the 200 ticks between the readings went to other guests (the
    # guest ticks are inside user and are not counted twice)
    assert bench.steal_share(before, after) == pytest.approx(0.2)
    assert bench.cpu_steal_ticks('cpu0 1 2 3 4 5 6 7 8') is None
    assert bench.cpu_steal_ticks('cpu 1 2 3') is None
    assert bench.steal_share(None, after) is None
    assert bench.steal_share(after, after) is None


BIG = 64 << 20  # above glibc's largest dynamic mmap threshold (32 MiB)


def _touch_fresh_mapping() -> None:
    # mapped afresh, not through malloc (which may serve a block already
    # touched); one write per 4 KiB page, unmapped on close
    with mmap.mmap(-1, BIG) as m:
        for i in range(0, BIG, 4096):
            m[i] = 1


def test_rounds_count_each_calls_page_faults():
    bench = _load_tool()
    faults = {}
    bench.interleaved_rounds({'touch': _touch_fresh_mapping,
                              'none': lambda: None}, 'cpu', 3, 0,
                             faults=faults)
    assert len(faults['touch']) == len(faults['none']) == 3
    # at least one fault per 2 MiB, should the kernel use huge pages
    assert min(faults['touch']) >= BIG // (2 << 20)
    assert max(faults['none']) < BIG // (2 << 20)


def test_tune_malloc_keeps_freed_memory_mapped():
    # in a child: the thresholds are the process's for good
    code = (
        'import sys; sys.path.insert(0, "tests")\n'
        'from testing_utils import load_tool\n'
        'bench = load_tool("tools/analysis_tools/benchmark_attention.py")\n'
        f'BIG = {BIG}\n'
        'def faults():\n'
        '    f0 = bench.minor_faults(); b = b"\\x01" * BIG; del b\n'
        '    return bench.minor_faults() - f0\n'
        'before = [faults() for _ in range(3)]\n'
        'bench.tune_malloc()\n'
        'faults()\n'
        'print(min(before), max(faults() for _ in range(3)))\n')
    # glibc's defaults, whatever this process was started with
    env = {k: v for k, v in os.environ.items()
           if not k.startswith('MALLOC_') and k != 'GLIBC_TUNABLES'}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True,
                         text=True, check=True, env=env).stdout.split()
    default, tuned = int(out[0]), int(out[1])
    # glibc maps each 64 MiB block afresh and unmaps it on free; tuned, the
    # block freed by the last call is handed out again, already touched
    assert default > BIG // 4096 // 2
    assert tuned < 100


@pytest.mark.slow
def test_quick_op_run_prints_every_stage(tmp_path):
    bench = _load_tool()
    out = tmp_path / 'table.md'
    result = bench.main(['--quick', '--skip-backbones', '--repeat', '1',
                         '--warmup', '0', '--out', str(out)])
    assert [tuple(r['shape'][1:2]) for r in result['ops']] == [
        (256, ), (512, ), (1024, ), (2048, )] * 2
    for r in result['ops']:
        assert r['floor_ms'] > 0 and r['bandwidth_gbs'] > 0
        assert r['mmsa_peak_mib'] > 0 and r['official_peak_mib'] > 0
        assert r['steal'] is None or 0 <= r['steal'] <= 1
    table = out.read_text()
    assert table.count('| det |') == 4 and table.count('| seg |') == 4
    assert 'copy bandwidth' in table
    assert '| steal |' in table
