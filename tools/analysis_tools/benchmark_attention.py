"""Side-by-side cost of Shuffle Attention (and the other attentions).

    python tools/analysis_tools/benchmark_attention.py [--device cpu|cuda]
        [--repeat 10] [--backbone-repeat 30] [--warmup 2] [--quick]
        [--input 2 3 512 512]
        [--tune-malloc] [--out docs/performance.md]
        [--plot docs/performance.png] [--load RESULT.json]

Every ratio is measured in one run with the variants interleaved round by
round (A, B, A, B, ...; median of each), so machine noise hits both sides.

* Op level: the official ``sa_layer`` forward (written out below as the
  baseline) vs mmsa's SA, forward and forward+backward (the gradients
  reset between calls, untimed), at the ResNet-50
  stage shapes (strides 4-32) of a batch-2 800x1344 detection input and a
  batch-4 512x512 segmentation input. Floor = 3 passes over the tensor's
  bytes at the copy bandwidth of a large ``dst.copy_(src)`` (256 MiB, read
  + write counted), timed in the same rounds as each shape's ops (a shared
  box's bandwidth can move by half between minutes); each ratio to the
  floor is the median over rounds of time / floor in that round. Peak
  memory = the highest allocator total during one forward+backward above
  the level before it: ``torch.cuda`` peak stats
  on CUDA; on CPU the ``Total Allocated`` of the ``[memory]`` events of
  ``torch.profiler(profile_memory=True)``, with the fused kernel's output
  cache off (the profiler sees no allocation when it reuses an output).
  mmsa's timings use the cache (``MMSA_SA_CACHE_MB``, default 1024 MiB), as
  a training or inference loop does; ``--no-output-cache`` turns it off.
* Backbone level: ResNet-50 vs SA-ResNet-50 with the official-form SA vs
  with mmsa's SA; train step (forward + backward, train mode) and inference
  (eval, no_grad) on ``--input``; overhead = median over rounds of the
  variant's time over plain R50's in the same round, with the 95%
  confidence interval of that median (distribution-free, from order
  statistics: ``--backbone-repeat`` rounds, 30 by default, put it within
  a few points on a quiet box). Informational: SE, ECA, CBAM, SGE.
* Targets: issue 7's (op forward <= 2x floor and forward+backward <= 3x at
  every shape, never slower than the official form; SA-R50 train step
  <= +5% and inference <= +3% over R50) with a verdict each, the backbone
  ones by the interval: 'met' where all of it is within the target.
* Page faults: the process's minor page faults per call, median over
  rounds (backbone level). Under glibc's default malloc a freed block of
  tens of MiB goes back to the kernel, and the next tensor in its place
  pays a fault per 4 KiB on first touch; which blocks do depends on the
  order of allocations, so variants with the same tensors can fault very
  differently. ``--tune-malloc`` keeps freed memory mapped (glibc's mmap
  and trim thresholds at 1 GiB, as ``MALLOC_MMAP_THRESHOLD_`` and
  ``MALLOC_TRIM_THRESHOLD_`` would set them), which leaves the compute.
* Steal: on a VM, the share of CPU time the host gave to other guests
  during each shape's rounds and each backbone section (``steal`` in Linux's
  ``/proc/stat``). A busy host takes tens of percent and slows the small
  shapes' ops and the bandwidth probe unevenly, so ratios taken under
  heavy steal say more about the host than about the code.
"""
import argparse
import datetime
import json
import math
import os
import os.path as osp
import platform
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

try:
    import resource
except ImportError:  # not Unix: no page-fault counts
    resource = None

import torch
import torch.nn as nn
import torch.nn.functional as F

import mmsa  # noqa: F401  (registration)
from mmsa.attention import ShuffleAttention
from mmsa.ops import sa_reference, set_output_cache_limit
from mmsa.models.backbones.det_resnet import AttnResNet

R50_STAGES = ((256, 4), (512, 8), (1024, 16), (2048, 32))
OP_INPUTS = (('det', 2, 800, 1344), ('seg', 4, 512, 512))
QUICK_OP_INPUTS = (('det', 1, 400, 672), ('seg', 1, 256, 256))
INFO_ATTENTIONS = ('SE', 'ECA', 'CBAM', 'SGE')


def official_sa(x: torch.Tensor, groups: int, cweight: torch.Tensor,
                cbias: torch.Tensor, sweight: torch.Tensor,
                sbias: torch.Tensor, gn_weight: torch.Tensor,
                gn_bias: torch.Tensor) -> torch.Tensor:
    """``sa_layer.forward`` of wofmanaf/SA-Net, written out: the baseline."""
    b, c, h, w = x.shape
    x = x.reshape(b * groups, -1, h, w)
    x_0, x_1 = x.chunk(2, dim=1)
    xn = F.adaptive_avg_pool2d(x_0, 1)
    xn = cweight * xn + cbias
    xn = x_0 * torch.sigmoid(xn)
    xs = F.group_norm(x_1, x_1.shape[1], gn_weight, gn_bias, eps=1e-5)
    xs = sweight * xs + sbias
    xs = x_1 * torch.sigmoid(xs)
    out = torch.cat([xn, xs], dim=1).reshape(b, -1, h, w)
    out = out.reshape(b, 2, -1, h, w).permute(0, 2, 1, 3, 4)
    return out.reshape(b, -1, h, w)


class OfficialSA(nn.Module):
    """The official module, holding the parameters of an mmsa SA."""

    def __init__(self, sa: ShuffleAttention) -> None:
        super().__init__()
        self.groups = sa.groups
        self.cweight, self.cbias = sa.cweight, sa.cbias
        self.sweight, self.sbias = sa.sweight, sa.sbias
        self.gn = sa.gn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return official_sa(x, self.groups, self.cweight, self.cbias,
                           self.sweight, self.sbias, self.gn.weight,
                           self.gn.bias)


def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def minor_faults() -> int:
    """Minor page faults of this process so far (0 where not counted)."""
    if resource is None:
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def interleaved_rounds(
        fns: Dict[str, Callable[[], object]], device: str, repeat: int,
        warmup: int,
        setups: Optional[Dict[str, Callable[[], object]]] = None,
        faults: Optional[Dict[str, List[int]]] = None
) -> Dict[str, List[float]]:
    """Seconds of each fn per round, timed round-robin; ``setups[name]``,
    where given, runs untimed just before each call of fn ``name``; into
    ``faults``, where given, each timed call's minor page faults."""
    setups = setups or {}
    for _ in range(warmup):
        for name, fn in fns.items():
            setups.get(name, lambda: None)()
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            setups.get(name, lambda: None)()
            sync(device)
            # a syscall next to the timed call only where the counts are
            # asked for (the op level's cold-cache timings do without)
            f0 = minor_faults() if faults is not None else 0
            t0 = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if faults is not None:
                faults.setdefault(name, []).append(minor_faults() - f0)
    return times


def round_overheads(rounds: Dict[str, List[float]],
                    base: str) -> Dict[str, List[float]]:
    """Each fn's time over ``base``'s in the same round, minus 1, per round:
    a slow spell of the machine hits both sides of each ratio."""
    return {
        k: [t / b - 1 for t, b in zip(v, rounds[base])]
        for k, v in rounds.items()
    }


CONFIDENCE = 0.95  # of the backbone overheads' intervals


def median_ci(values: Sequence[float],
              confidence: float = CONFIDENCE
              ) -> Tuple[float, float, float]:
    """(low, high, coverage): the distribution-free confidence interval of
    the median, from order statistics.

    ``[x_(k), x_(n+1-k)]`` of the sorted values holds the true median with
    probability ``1 - 2 P(B < k)``, ``B ~ Binomial(n, 1/2)``, whatever the
    distribution; k is the largest for which that reaches ``confidence``
    (k = 1, the whole range, with its lower coverage, where n is too small:
    fewer than 6 values for 95%). The quartiles of 20 rounds are about this
    interval; its width shrinks as 1 / sqrt(rounds).
    """
    xs = sorted(values)
    n = len(xs)
    if n == 0:
        raise ValueError('median_ci: no values')
    coverage = 1 - 2 * 0.5**n  # k = 1
    k = 1
    below = 1  # 2^n P(B < k)
    while k + 1 <= (n + 1) // 2:
        below += math.comb(n, k)
        cov = 1 - 2 * below / 2**n
        if cov < confidence:
            break
        k, coverage = k + 1, cov
    return xs[k - 1], xs[n - k], coverage


BIG_COPY_NUMEL = 64 * 2**20  # 256 MiB of float32
BIG_COPY_BYTES = 2 * BIG_COPY_NUMEL * 4  # read + write


def big_copy(device: str) -> Callable[[], object]:
    """A copy of 256 MiB of float32: the bandwidth probe for the floor."""
    src = torch.randn(BIG_COPY_NUMEL, device=device)
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def cpu_steal_ticks(stat: Optional[str] = None) -> Optional[Tuple[int, int]]:
    """(steal, total) CPU ticks of all CPUs from the ``cpu`` line of
    ``/proc/stat`` (or of ``stat``, its text); None where there is no such
    line (not Linux)."""
    if stat is None:
        try:
            with open('/proc/stat') as f:
                stat = f.readline()
        except OSError:
            return None
    fields = stat.split()
    if len(fields) < 9 or fields[0] != 'cpu':
        return None
    # user nice system idle iowait irq softirq steal; the guest fields
    # after them are already counted in user and nice
    ticks = [int(v) for v in fields[1:9]]
    return ticks[7], sum(ticks)


def steal_share(before: Optional[Tuple[int, int]],
                after: Optional[Tuple[int, int]]) -> Optional[float]:
    """Share of the CPU time between two ``cpu_steal_ticks`` readings that
    the host gave to other guests; None without both readings or ticks."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def floor_seconds(nbytes: int, t_copy: float) -> float:
    """3 passes of ``nbytes`` at the bandwidth of a big copy that took
    ``t_copy`` seconds."""
    return 3 * nbytes * t_copy / BIG_COPY_BYTES


def floor_ratios(rounds: Dict[str, List[float]], nbytes: int,
                 names: Sequence[str]) -> Dict[str, float]:
    """Median over rounds of each fn's time over the floor of that round
    (3 passes of ``nbytes`` at the bandwidth of the round's big copy)."""
    floors = [floor_seconds(nbytes, t) for t in rounds['copy']]
    return {
        k: statistics.median(t / f for t, f in zip(rounds[k], floors))
        for k in names
    }


def peak_bytes(fn: Callable[[], object], device: str) -> int:
    """Peak allocated bytes during ``fn`` above the level before it."""
    if device == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU],
                 profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        path = osp.join(tmp, 'trace.json')
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)['traceEvents']
    totals = [
        e['args']['Total Allocated'] for e in events
        if e.get('name') == '[memory]' and e['args'].get('Device Type') == 0
    ]
    if not totals:
        return -1
    first = next(e for e in events if e.get('name') == '[memory]')
    base = first['args']['Total Allocated'] - first['args']['Bytes']
    return max(totals) - base


def random_sa(channels: int, impl: str, device: str) -> ShuffleAttention:
    gen = torch.Generator().manual_seed(channels)
    sa = ShuffleAttention(channels, impl=impl)
    with torch.no_grad():
        for p in sa.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return sa.to(device)


def compiled_reference(sa: ShuffleAttention) -> Callable:
    """mmsa's reference composition under torch.compile (inductor): the
    alternative to the hand-written kernel that the issue asks to weigh."""
    fn = torch.compile(sa_reference, dynamic=False)

    def run(x):
        return fn(x, sa.groups, sa.cweight, sa.cbias, sa.sweight, sa.sbias,
                  sa.gn.weight, sa.gn.bias, sa.gn.eps)
    return run


def bench_ops(args) -> List[dict]:
    rows = []
    copy = big_copy(args.device)
    inputs = QUICK_OP_INPUTS if args.quick else OP_INPUTS
    for task, batch, height, width in inputs:
        for channels, stride in R50_STAGES:
            shape = (batch, channels, height // stride, width // stride)
            x = torch.randn(shape, device=args.device)
            grad = torch.randn_like(x)
            sa = random_sa(channels, 'auto', args.device)
            off = OfficialSA(sa)

            def fwd(m):
                def run():
                    with torch.no_grad():
                        return m(x)
                return run

            def fwd_bwd(m):
                # A leaf per variant: each reset frees the .grad its own last
                # call made (a shared leaf would charge one variant for
                # unmapping the other's gradient, ~10 ms at 137 MB).
                xg = x.clone().requires_grad_()

                def reset():
                    # a fresh .grad each time: accumulating into the last
                    # one would add a pass that is not SA's
                    xg.grad = None
                    m.zero_grad(set_to_none=True)

                def run():
                    m(xg).backward(grad)
                return reset, run

            # What any op pays for one fresh output of this size (the
            # allocator's page faults on first touch), for reading the rest.
            fns = {'official': fwd(off), 'mmsa': fwd(sa),
                   'new': lambda: torch.empty_like(x).fill_(0), 'copy': copy}
            ticks = cpu_steal_ticks()
            if args.inductor:
                fns['inductor'] = fwd(compiled_reference(sa))
            r_fwd = interleaved_rounds(fns, args.device, args.repeat,
                                       args.warmup)
            # The gradients are reset untimed, as optimizer.zero_grad does
            # once per training step rather than per op (~0.1-0.15 ms of
            # Python per reset with cold caches, a tenth of the floor at
            # 16x16, in both variants).
            (reset_off, fb_off), (reset_sa, fb_sa) = fwd_bwd(off), fwd_bwd(sa)
            r_fb = interleaved_rounds(
                {'official': fb_off, 'mmsa': fb_sa, 'copy': copy},
                args.device, args.repeat, args.warmup,
                setups={'official': reset_off, 'mmsa': reset_sa})
            steal = steal_share(ticks, cpu_steal_ticks())
            t_fwd = {k: statistics.median(v) for k, v in r_fwd.items()}
            t_fb = {k: statistics.median(v) for k, v in r_fb.items()}
            nbytes = x.numel() * x.element_size()
            t_copy = statistics.median(r_fwd['copy'] + r_fb['copy'])
            floor = floor_seconds(nbytes, t_copy)
            x_fwd = floor_ratios(r_fwd, nbytes, ('official', 'mmsa'))
            x_fb = floor_ratios(r_fb, nbytes, ('official', 'mmsa'))
            row = dict(task=task, shape=list(shape), path=sa.path,
                       floor_ms=floor * 1e3, new_output_ms=t_fwd['new'] * 1e3,
                       bandwidth_gbs=BIG_COPY_BYTES / t_copy / 1e9,
                       steal=steal)
            if args.inductor:
                row['inductor_fwd_ms'] = t_fwd['inductor'] * 1e3
            for name, m in (('official', off), ('mmsa', sa)):
                row[f'{name}_fwd_ms'] = t_fwd[name] * 1e3
                row[f'{name}_fb_ms'] = t_fb[name] * 1e3
                row[f'{name}_fwd_x'] = x_fwd[name]
                row[f'{name}_fb_x'] = x_fb[name]
                # with fresh outputs: the profiler sees no allocation when
                # the kernel reuses a cached output
                set_output_cache_limit(0)
                reset, run = fwd_bwd(m)
                reset()
                row[f'{name}_peak_mib'] = peak_bytes(run,
                                                     args.device) / 2**20
                set_output_cache_limit(args.cache_mib)
            rows.append(row)
            print(f'[op] {task} {tuple(shape)}: fwd official '
                  f'{row["official_fwd_ms"]:.2f} ms, mmsa '
                  f'{row["mmsa_fwd_ms"]:.2f} ms ({row["path"]}); fwd+bwd '
                  f'{row["official_fb_ms"]:.2f} / {row["mmsa_fb_ms"]:.2f} '
                  f'ms; floor {floor * 1e3:.2f} ms (x floor: mmsa fwd '
                  f'{row["mmsa_fwd_x"]:.2f}, fwd+bwd {row["mmsa_fb_x"]:.2f}); '
                  f'steal {percent(steal)}', flush=True)
            del x, grad
    return rows


def officialize(model: nn.Module) -> nn.Module:
    """Swap every mmsa SA in ``model`` for the official form."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ShuffleAttention):
                setattr(parent, name, OfficialSA(child))
    return model


def bench_backbones(args) -> List[dict]:
    # mmsa next to R50 in each round: the ratio that the targets are about
    variants = {
        'R50': dict(),
        'SA-R50 (mmsa)': dict(attention=dict(type='SA')),
        'SA-R50 (official form)': dict(attention=dict(type='SA',
                                                      impl='reference')),
    }
    if not args.no_info:
        for name in INFO_ATTENTIONS:
            variants[f'{name}-R50'] = dict(attention=dict(type=name))
    models = {}
    for name, kwargs in variants.items():
        torch.manual_seed(0)
        model = AttnResNet(depth=50, **kwargs)
        if name == 'SA-R50 (official form)':
            officialize(model)
        models[name] = model.to(args.device)
    x = torch.randn(args.input, device=args.device)

    def train_step(model):
        def run():
            model.train()
            model.zero_grad(set_to_none=True)
            sum(o.mean() for o in model(x)).backward()
        return run

    def infer(model):
        def run():
            model.eval()
            with torch.no_grad():
                model(x)
        return run

    repeat = args.backbone_repeat
    warmup = max(1, args.warmup)
    ticks = cpu_steal_ticks()
    f_train: Dict[str, List[int]] = {}
    f_infer: Dict[str, List[int]] = {}
    t_train = interleaved_rounds(
        {k: train_step(m) for k, m in models.items()}, args.device, repeat,
        warmup, faults=f_train)
    ticks_mid = cpu_steal_ticks()
    t_infer = interleaved_rounds({k: infer(m) for k, m in models.items()},
                                 args.device, repeat, warmup, faults=f_infer)
    steal = dict(train_steal=steal_share(ticks, ticks_mid),
                 infer_steal=steal_share(ticks_mid, cpu_steal_ticks()))
    print(f'[backbone] steal: train rounds {percent(steal["train_steal"])}, '
          f'inference rounds {percent(steal["infer_steal"])}', flush=True)
    ratios_of = dict(train=round_overheads(t_train, 'R50'),
                     infer=round_overheads(t_infer, 'R50'))
    rows = []
    for name in models:
        row = dict(model=name, rounds=repeat, **steal)
        for key, times, faults in (('train', t_train, f_train),
                                   ('infer', t_infer, f_infer)):
            ratios = ratios_of[key][name]
            q1, median, q3 = statistics.quantiles(ratios, n=4,
                                                  method='inclusive')
            low, high, coverage = median_ci(ratios)
            row.update({
                f'{key}_ms': statistics.median(times[name]) * 1e3,
                f'{key}_overhead': median,
                f'{key}_overhead_iqr': [q1, q3],
                f'{key}_overhead_ci': [low, high],
                f'{key}_overhead_ci_coverage': coverage,
                f'{key}_faults': statistics.median(faults[name]),
            })
        rows.append(row)
        print(f'[backbone] {name}: train {row["train_ms"]:.0f} ms '
              f'({row["train_overhead"]:+.1%}), inference '
              f'{row["infer_ms"]:.0f} ms ({row["infer_overhead"]:+.1%}); '
              f'page faults {row["train_faults"]:.0f} / '
              f'{row["infer_faults"]:.0f}', flush=True)
    return rows


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def tune_malloc(nbytes: int = 1 << 30) -> None:
    """glibc's mmap and trim thresholds fixed at ``nbytes``: freed blocks
    stay mapped for the next tensor instead of going back to the kernel
    (no first-touch page faults), as ``MALLOC_MMAP_THRESHOLD_`` and
    ``MALLOC_TRIM_THRESHOLD_`` set at start-up would."""
    import ctypes
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None or not (mallopt(M_MMAP_THRESHOLD, nbytes)
                               and mallopt(M_TRIM_THRESHOLD, nbytes)):
        raise SystemExit('--tune-malloc: this process\'s C library has no '
                         'glibc mallopt that takes the thresholds; run '
                         'without --tune-malloc')


def machine(device: str, cache_mib: int, tuned_malloc: bool) -> str:
    if device == 'cuda':
        return torch.cuda.get_device_name()
    from mmsa.ops import shuffle_attention as sa_ops
    kernel = (f'fused SA kernel {sa_ops._ext.isa()}'
              if sa_ops._ext is not None else 'no fused SA kernel')
    kernel += (f', output cache {cache_mib} MiB' if cache_mib else
               ', output cache off')
    return (f'{platform.processor() or platform.machine()}, '
            f'{os.cpu_count()} cores, torch threads '
            f'{torch.get_num_threads()}, {kernel}, malloc '
            f'{"tuned (--tune-malloc)" if tuned_malloc else "default"}')


def percent(share: Optional[float]) -> str:
    return 'n/a' if share is None else f'{share:.0%}'


def markdown(result: dict) -> str:
    bws = [r['bandwidth_gbs'] for r in result['ops']]
    bw_text = (f'; copy bandwidth {min(bws):.1f}-{max(bws):.1f} GB/s (read + '
               'write, 256 MiB, timed in each shape\'s rounds)' if bws else '')
    lines = [
        f'Machine: {result["machine"]}; torch {result["torch"]}; '
        f'device {result["device"]}{bw_text}.'
    ]
    # a run with --skip-ops or --skip-backbones shows only what it measured
    lines += [] if not result['ops'] else [
        '', 'Op level (ms, medians over rounds; x floor = median over rounds '
        'of time / floor, floor = 3 tensor passes at the copy bandwidth of '
        'that round; new output = allocating and first touching one tensor of '
        'the shape, which every fresh output pays (mmsa\'s come from its '
        'output cache unless it is off); peak = allocated during fwd+bwd, '
        'with fresh outputs; steal = share of the CPU time the VM\'s host '
        'gave to other guests during the shape\'s rounds):', '',
        '| input | shape (N,C,H,W) | floor | new output | official fwd | '
        'mmsa fwd (x floor) | official fwd+bwd | mmsa fwd+bwd (x floor) | '
        'speed-up fwd / fwd+bwd | peak MiB official / mmsa | steal |',
        '|---|---|---|---|---|---|---|---|---|---|---|'
    ]
    for r in result['ops']:
        fl = r['floor_ms']
        lines.append(
            f'| {r["task"]} | {tuple(r["shape"])} | {fl:.1f} | '
            f'{r.get("new_output_ms", float("nan")):.1f} | '
            f'{r["official_fwd_ms"]:.1f} ({r["official_fwd_x"]:.1f}x) '
            f'| {r["mmsa_fwd_ms"]:.1f} ({r["mmsa_fwd_x"]:.2f}x) | '
            f'{r["official_fb_ms"]:.1f} ({r["official_fb_x"]:.1f}x) | '
            f'{r["mmsa_fb_ms"]:.1f} ({r["mmsa_fb_x"]:.2f}x) | '
            f'{r["official_fwd_ms"] / r["mmsa_fwd_ms"]:.1f}x / '
            f'{r["official_fb_ms"] / r["mmsa_fb_ms"]:.1f}x | '
            f'{r["official_peak_mib"]:.0f} / {r["mmsa_peak_mib"]:.0f} | '
            f'{percent(r.get("steal"))} |')
    if any('inductor_fwd_ms' in r for r in result['ops']):
        lines += ['', 'Forward by the reference composition under '
                  'torch.compile (inductor, compiled per shape) vs mmsa:', '',
                  '| input | shape | inductor fwd | mmsa fwd |',
                  '|---|---|---|---|']
        lines += [f'| {r["task"]} | {tuple(r["shape"])} | '
                  f'{r["inductor_fwd_ms"]:.1f} | {r["mmsa_fwd_ms"]:.1f} |'
                  for r in result['ops'] if 'inductor_fwd_ms' in r]
    bb = result['backbones']
    bb_steal = (f'; steal {percent(bb[0].get("train_steal"))} during the '
                f'train rounds, {percent(bb[0].get("infer_steal"))} during '
                'the inference rounds' if bb else '')
    bb_rounds = f'{bb[0]["rounds"]} rounds; ' if bb and 'rounds' in bb[0] \
        else ''
    coverage = bb[0].get('train_overhead_ci_coverage', 1) if bb else 1
    if coverage < CONFIDENCE:
        bb_rounds += (f'too few for a {CONFIDENCE:.0%} interval: the '
                      f'brackets hold the median with {coverage:.0%} '
                      'confidence; ')
    lines += [] if not bb else [
        '', f'Backbone level (ResNet-50, input {tuple(result["input"])}, '
        f'{bb_rounds}overhead = median over rounds of time / plain R50 time '
        'in the same round, with the 95% confidence interval of that median '
        'in brackets (distribution-free, from the order statistics of the '
        'per-round ratios; results saved before it had one show the '
        'quartiles); faults = minor page faults per call, '
        f'median{bb_steal}):', '',
        '| backbone | train step ms | overhead | faults | inference ms | '
        'overhead | faults |', '|---|---|---|---|---|---|---|'
    ]

    def overhead(r, key):
        text = f'{r[key]:+.1%}'
        interval = r.get(f'{key}_ci', r.get(f'{key}_iqr'))
        if interval is not None:
            text += f' [{interval[0]:+.1%}, {interval[1]:+.1%}]'
        return text

    def faults(r, key):
        return f'{r[key]:.0f}' if key in r else 'n/a'

    for r in result['backbones']:
        lines.append(f'| {r["model"]} | {r["train_ms"]:.0f} | '
                     f'{overhead(r, "train_overhead")} | '
                     f'{faults(r, "train_faults")} | {r["infer_ms"]:.0f} | '
                     f'{overhead(r, "infer_overhead")} | '
                     f'{faults(r, "infer_faults")} |')
    targets = target_rows(result)
    if targets:
        lines += ['', 'Targets (issue 7; the backbone verdicts by the 95% '
                  'confidence interval of the median):', '',
                  '| target | measured | verdict |', '|---|---|---|']
        lines += [f'| {t} | {m} | {v} |' for t, m, v in targets]
    return '\n'.join(lines) + '\n'


OP_TARGETS = (('fwd', 'forward', 2.0), ('fb', 'forward+backward', 3.0))
BACKBONE_TARGETS = (('train', 'train step', 0.05), ('infer', 'inference',
                                                      0.03))


def target_rows(result: dict) -> List[Tuple[str, str, str]]:
    """(target, measured, verdict) for each of issue 7's targets that the
    run measured. A backbone overhead is 'met' where the whole confidence
    interval of its median is within the target, 'met by the median' where
    only the median is (more rounds would tell), else 'missed'."""
    rows = []
    ops = result['ops']
    if ops:
        for key, label, limit in OP_TARGETS:
            xs = [r[f'mmsa_{key}_x'] for r in ops]
            n_ok = sum(x <= limit for x in xs)
            rows.append((f'SA op {label} <= {limit:g}x floor at every shape',
                         f'{n_ok} of {len(xs)} shapes within, '
                         f'{min(xs):.2f}-{max(xs):.2f}x',
                         'met' if n_ok == len(xs) else 'missed'))
        speedups = [
            r[f'official_{key}_ms'] / r[f'mmsa_{key}_ms'] for r in ops
            for key, _, _ in OP_TARGETS
        ]
        rows.append(('SA op never slower than the official form',
                     f'{min(speedups):.1f}-{max(speedups):.1f}x faster '
                     '(fwd and fwd+bwd, every shape)',
                     'met' if min(speedups) >= 1 else 'missed'))
    sa = next((r for r in result['backbones']
               if r['model'] == 'SA-R50 (mmsa)'), None)
    for key, label, limit in BACKBONE_TARGETS if sa else ():
        median = sa[f'{key}_overhead']
        measured = f'{median:+.1%}'
        ci = sa.get(f'{key}_overhead_ci')
        # too few rounds for a 95% interval: the median's verdict at most
        coverage = sa.get(f'{key}_overhead_ci_coverage', CONFIDENCE)
        if ci is None:
            verdict = 'met by the median' if median <= limit else 'missed'
        else:
            measured += (f' ({min(coverage, CONFIDENCE):.0%} CI '
                         f'{ci[0]:+.1%} to {ci[1]:+.1%}, {sa["rounds"]} '
                         'rounds)')
            if ci[1] <= limit and coverage >= CONFIDENCE:
                verdict = 'met'
            else:
                verdict = 'met by the median' if median <= limit else 'missed'
        rows.append((f'SA-R50 {label} <= +{limit:.0%} over R50', measured,
                     verdict))
    return rows


def plot(result: dict, path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.5))
    ops = result['ops']
    labels = [f'{r["task"]} C={r["shape"][1]}' for r in ops]
    xs = range(len(ops))
    width = 0.2
    bars = [('official fwd', 'official_fwd_x'), ('mmsa fwd', 'mmsa_fwd_x'),
            ('official fwd+bwd', 'official_fb_x'),
            ('mmsa fwd+bwd', 'mmsa_fb_x')]
    for i, (label, key) in enumerate(bars):
        ax0.bar([x + (i - 1.5) * width for x in xs],
                [r[key] for r in ops], width, label=label)
    ax0.axhline(1, color='k', lw=0.8)
    for (_, label, limit), style in zip(OP_TARGETS, ('--', ':')):
        ax0.axhline(limit, color='grey', ls=style, lw=0.9,
                    label=f'mmsa {label} target ({limit:g}x)')
    ax0.set_xticks(list(xs), labels, rotation=30, ha='right')
    ax0.set_ylabel('time / floor (3 tensor passes)')
    ax0.set_yscale('log')
    # headroom on the log axis for the legend above the bars
    tallest = max((r[key] for r in ops for _, key in bars), default=10)
    ax0.set_ylim(top=tallest * 12)
    ax0.set_title('SA op, ResNet-50 stage shapes')
    ax0.legend(fontsize=7, ncol=2, loc='upper left')
    bb = result['backbones']
    names = [r['model'] for r in bb]
    ys = range(len(bb))
    for (key, label, limit), shift, style in zip(BACKBONE_TARGETS,
                                                 (-0.2, 0.2), ('--', ':')):
        medians = [100 * r[f'{key}_overhead'] for r in bb]
        # the confidence interval of each median, where the run has one
        errors = [[m - 100 * r[f'{key}_overhead_ci'][0],
                   100 * r[f'{key}_overhead_ci'][1] - m]
                  if f'{key}_overhead_ci' in r else [0, 0]
                  for m, r in zip(medians, bb)]
        ax1.barh([y + shift for y in ys], medians, 0.4, label=label,
                 xerr=list(zip(*errors)) if bb else None, capsize=2)
        ax1.axvline(100 * limit, color='grey', ls=style, lw=0.9,
                    label=f'SA-R50 {label} target (+{limit:.0%})')
    ax1.set_yticks(list(ys), names)
    ax1.invert_yaxis()
    ax1.axvline(0, color='k', lw=0.8)
    ax1.set_xlabel('% over plain ResNet-50 (median, 95% CI)')
    ax1.set_title(f'Backbone, input {tuple(result["input"])}')
    ax1.legend(fontsize=8)
    fig.suptitle(f'{result["machine"]} ({result["device"]}), '
                 f'{result["date"]}', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--repeat', type=int, default=10,
                        help='timed rounds per op-level measurement')
    parser.add_argument('--backbone-repeat', type=int, default=30,
                        help='timed rounds per backbone measurement (at '
                        'least 3): the 95%% confidence interval of a median '
                        'narrows as 1 / sqrt(rounds)')
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--inductor', action='store_true',
                        help='also time the reference composition under '
                        'torch.compile (op level, forward; compiles once '
                        'per shape, ~30 s each on 2 cores)')
    parser.add_argument('--quick', action='store_true',
                        help='small shapes and input, few rounds')
    parser.add_argument('--input', type=int, nargs=4, default=None,
                        metavar=('N', 'C', 'H', 'W'),
                        help='backbone input; default 2 3 512 512')
    parser.add_argument('--no-info', action='store_true',
                        help='skip the SE/ECA/CBAM/SGE backbones')
    parser.add_argument('--no-output-cache', action='store_true',
                        help='turn the fused kernel\'s output cache off (as '
                        'MMSA_SA_CACHE_MB=0): every output is fresh memory')
    parser.add_argument('--tune-malloc', action='store_true',
                        help='fix glibc\'s mmap and trim thresholds at 1 '
                        'GiB before timing: freed memory stays mapped, so '
                        'no variant pays first-touch page faults for it')
    parser.add_argument('--skip-ops', action='store_true')
    parser.add_argument('--skip-backbones', action='store_true')
    parser.add_argument('--out', help='write markdown (.md) or JSON (.json); '
                        'other suffixes get both')
    parser.add_argument('--plot', help='bar chart PNG')
    parser.add_argument('--load', metavar='RESULT.json',
                        help='render the tables, verdicts and chart of a '
                        'run saved with --out instead of measuring')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    if args.backbone_repeat < 3:
        parser.error(f'--backbone-repeat {args.backbone_repeat}: the '
                     'quartiles and the interval need at least 3 rounds; '
                     'pass 3 or more (30 by default)')
    if args.quick:
        args.repeat = min(args.repeat, 3)
        args.backbone_repeat = min(args.backbone_repeat, 3)
        args.warmup = min(args.warmup, 1)
    args.cache_mib = 0 if args.no_output_cache else int(
        os.environ.get('MMSA_SA_CACHE_MB', 1024))
    if args.input is None:
        args.input = [1, 3, 256, 256] if args.quick else [2, 3, 512, 512]
    return args


RESULT_KEYS = ('date', 'machine', 'device', 'torch', 'input', 'ops',
               'backbones')


def load_result(path: str) -> dict:
    """A run saved by ``--out`` (its JSON), for ``--load``."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as err:
        raise SystemExit(f'--load {path}: cannot read a JSON result ({err});'
                         ' pass the .json that --out wrote') from None
    missing = [k for k in RESULT_KEYS
               if not isinstance(result, dict) or k not in result]
    if missing:
        raise SystemExit(f'--load {path}: not a benchmark_attention result '
                         f'(no {", ".join(missing)}); pass the .json that '
                         '--out wrote')
    return result


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.load:
        result = load_result(args.load)
    else:
        set_output_cache_limit(args.cache_mib)
        if args.tune_malloc:
            tune_malloc()
        result = dict(
            date=datetime.date.today().isoformat(),
            machine=machine(args.device, args.cache_mib, args.tune_malloc),
            device=args.device, torch=torch.__version__,
            command=' '.join([osp.relpath(sys.argv[0])] + sys.argv[1:]),
            input=args.input,
            ops=[] if args.skip_ops else bench_ops(args),
            backbones=[] if args.skip_backbones else bench_backbones(args))
    table = markdown(result)
    print(table)
    if args.out:
        stem, ext = osp.splitext(args.out)
        if ext != '.json':
            with open(stem + '.md' if ext != '.md' else args.out, 'w') as f:
                f.write(table)
        if ext != '.md':
            with open(stem + '.json', 'w') as f:
                json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == '__main__':
    main()
