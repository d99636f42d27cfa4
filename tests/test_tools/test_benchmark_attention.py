"""tools/analysis_tools/benchmark_attention.py: its ratios, one quick run."""
import json
import math
import mmap
import os
import random
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


def test_overheads_pair_each_round_with_the_base():
    bench = _load_tool()
    rounds = {'R50': [1.0, 2.0, 1.0, 1.0, 1.0],
              'SA': [1.1, 2.0, 1.2, 1.0, 1.3]}
    ratios = bench.round_overheads(rounds, 'R50')
    assert ratios['SA'] == pytest.approx([0.1, 0.0, 0.2, 0.0, 0.3])
    assert ratios['R50'] == [0.0] * 5


def _binomial_coverage(n, k):
    # P(x_(k) <= median <= x_(n+1-k)) = 1 - 2 P(B <= k - 1), B ~ Bin(n, .5)
    return 1 - 2 * sum(math.comb(n, i) for i in range(k)) / 2**n


@pytest.mark.parametrize('n, k', [(10, 2), (20, 6), (40, 14), (80, 31)])
def test_median_ci_takes_the_tabulated_order_statistics(n, k):
    bench = _load_tool()
    # shuffled values: the interval is of the sorted ones
    values = random.Random(n).sample(range(100, 100 + n), n)
    low, high, coverage = bench.median_ci(values)
    # the textbook ranks for 95% (e.g. Conover's table: 6 and 15 of 20)
    assert (low, high) == (100 + k - 1, 100 + n - k)
    assert coverage == pytest.approx(_binomial_coverage(n, k))
    assert coverage >= 0.95 > _binomial_coverage(n, k + 1)


def test_median_ci_of_too_few_rounds_is_the_range_with_its_coverage():
    bench = _load_tool()
    assert bench.median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0, 0.75)
    with pytest.raises(ValueError, match='no values'):
        bench.median_ci([])


def test_median_ci_covers_the_median_at_its_stated_rate():
    bench = _load_tool()
    # skewed per-round noise, as on a shared box: the interval must still
    # hold the true median in ~96% of repeated 20-round experiments
    rng = random.Random(0)
    true_median = 0.02 + math.log(2) * 0.05
    hits = 0
    for _ in range(2000):
        ratios = [0.02 + rng.expovariate(20) for _ in range(20)]
        low, high, _ = bench.median_ci(ratios)
        hits += low <= true_median <= high
    assert 0.94 <= hits / 2000 <= 0.975


def _backbone_row(train, train_ci, infer, infer_ci):
    return dict(model='SA-R50 (mmsa)', rounds=20, train_overhead=train,
                train_overhead_ci=train_ci, infer_overhead=infer,
                infer_overhead_ci=infer_ci)


def test_targets_judge_backbones_by_the_confidence_interval():
    bench = _load_tool()
    op = dict(mmsa_fwd_x=1.2, mmsa_fb_x=2.9, official_fwd_ms=10.0,
              mmsa_fwd_ms=2.0, official_fb_ms=30.0, mmsa_fb_ms=6.0)
    result = dict(ops=[op, dict(op, mmsa_fb_x=3.1)], backbones=[
        dict(model='R50'),
        _backbone_row(0.01, [-0.01, 0.04], 0.02, [0.0, 0.05])
    ])
    rows = {t: (m, v) for t, m, v in bench.target_rows(result)}
    assert rows['SA op forward <= 2x floor at every shape'] == (
        '2 of 2 shapes within, 1.20-1.20x', 'met')
    assert rows['SA op forward+backward <= 3x floor at every shape'][1] == \
        'missed'
    assert rows['SA op never slower than the official form'][1] == 'met'
    assert rows['SA-R50 train step <= +5% over R50'] == (
        '+1.0% (95% CI -1.0% to +4.0%, 20 rounds)', 'met')
    assert rows['SA-R50 inference <= +3% over R50'][1] == \
        'met by the median'
    result['backbones'][1] = _backbone_row(0.06, [0.0, 0.1], 0.0, [0, 0])
    rows = {t: v for t, _, v in bench.target_rows(result)}
    assert rows['SA-R50 train step <= +5% over R50'] == 'missed'
    # a run without the op level or the backbones judges only what it has
    assert bench.target_rows(dict(ops=[], backbones=[])) == []


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


def test_markdown_shows_the_interval_and_the_verdicts():
    bench = _load_tool()
    rows = [
        dict(model='R50', rounds=20, train_ms=2000.0, infer_ms=900.0,
             train_overhead=0.0, train_overhead_ci=[0.0, 0.0],
             infer_overhead=0.0, infer_overhead_ci=[0.0, 0.0],
             train_faults=0, infer_faults=0),
        dict(_backbone_row(0.012, [-0.004, 0.031], 0.005, [-0.01, 0.02]),
             train_ms=2030.0, infer_ms=905.0, train_faults=0,
             infer_faults=0)
    ]
    table = bench.markdown(dict(machine='m', torch='t', device='cpu',
                                input=[2, 3, 512, 512], ops=[],
                                backbones=rows))
    assert '20 rounds; overhead = median' in table
    # no ops measured (--skip-ops): no op section
    assert 'Op level' not in table and '| input |' not in table
    assert '| SA-R50 (mmsa) | 2030 | +1.2% [-0.4%, +3.1%] | 0 |' in table
    assert ('| SA-R50 train step <= +5% over R50 | +1.2% (95% CI -0.4% to '
            '+3.1%, 20 rounds) | met |') in table
    assert '| SA-R50 inference <= +3% over R50 |' in table


def test_plot_draws_intervals_and_old_results_without_them(tmp_path):
    bench = _load_tool()
    op = dict(task='det', shape=[2, 256, 200, 336], official_fwd_x=12.0,
              mmsa_fwd_x=0.8, official_fb_x=27.0, mmsa_fb_x=1.9)
    row = dict(_backbone_row(0.01, [-0.004, 0.02], 0.01, [0.0, 0.02]))
    old = dict(model='SE-R50', train_overhead=0.1, infer_overhead=0.05)
    result = dict(ops=[op], backbones=[row, old], input=[2, 3, 512, 512],
                  machine='m', device='cpu', date='2026-12-01')
    bench.plot(result, str(tmp_path / 'chart.png'))
    assert (tmp_path / 'chart.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_load_renders_a_saved_run_without_measuring(tmp_path):
    bench = _load_tool()
    saved = dict(date='2026-12-01', machine='m', device='cpu', torch='t',
                 input=[2, 3, 512, 512], ops=[], backbones=[
                     dict(_backbone_row(0.01, [0.0, 0.02], 0.01, [0.0, 0.02]),
                          train_ms=1.0, infer_ms=1.0)])
    path = tmp_path / 'run.json'
    path.write_text(json.dumps(saved))
    result = bench.main(['--load', str(path), '--out',
                         str(tmp_path / 'again.md')])
    assert result == saved
    assert '| SA-R50 train step <= +5% over R50 |' in (
        tmp_path / 'again.md').read_text()


def test_load_of_something_else_is_one_clear_error(tmp_path):
    bench = _load_tool()
    with pytest.raises(SystemExit, match='cannot read a JSON result'):
        bench.load_result(str(tmp_path / 'missing.json'))
    (tmp_path / 'list.json').write_text('[1, 2]')
    with pytest.raises(SystemExit, match='not a benchmark_attention result'):
        bench.load_result(str(tmp_path / 'list.json'))
    (tmp_path / 'part.json').write_text('{"ops": []}')
    with pytest.raises(SystemExit, match=r'\(no date, machine, device, '
                       r'torch, input, backbones\)'):
        bench.load_result(str(tmp_path / 'part.json'))


def test_too_few_backbone_rounds_is_one_clear_error(capsys):
    bench = _load_tool()
    with pytest.raises(SystemExit):
        bench.parse_args(['--backbone-repeat', '2'])
    assert '--backbone-repeat 2: the quartiles and the interval need at ' \
        'least 3 rounds' in capsys.readouterr().err
    assert bench.parse_args(['--quick']).backbone_repeat == 3
    assert bench.parse_args([]).backbone_repeat == 30


def test_too_few_rounds_for_95_percent_give_no_met_verdict():
    bench = _load_tool()
    # 5 rounds: the whole range holds the median with 94% confidence only
    row = dict(_backbone_row(0.01, [0.0, 0.02], 0.01, [0.0, 0.02]),
               rounds=5, train_overhead_ci_coverage=0.9375,
               infer_overhead_ci_coverage=0.9375, train_ms=1.0,
               infer_ms=1.0)
    rows = {t: (m, v) for t, m, v in bench.target_rows(
        dict(ops=[], backbones=[row]))}
    assert rows['SA-R50 train step <= +5% over R50'] == (
        '+1.0% (94% CI +0.0% to +2.0%, 5 rounds)', 'met by the median')
    table = bench.markdown(dict(machine='m', torch='t', device='cpu',
                                input=[1, 3, 64, 64], ops=[],
                                backbones=[row]))
    assert 'too few for a 95% interval: the brackets hold the median with ' \
        '94% confidence' in table
