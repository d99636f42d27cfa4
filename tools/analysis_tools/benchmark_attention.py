"""Side-by-side cost of mmsa's attentions in a ResNet-50 and of the SA op.

    python tools/analysis_tools/benchmark_attention.py --device cuda
        [--quick] [--rounds 15] [--warmup 3]
        [--shapes det seg | --input N C H W] [--arch r50 | r50-v1c]
        [--precisions fp32 amp]
        [--attentions SA SE ECA SGE CBAM] [--compile SA]
        [--compile-budget 200] [--skip-ops] [--skip-backbones]
        [--skip-memory] [--memory-input N C H W]
        [--out FILE] [--load FILE.json]

Every comparison is measured in one run, the variants interleaved round by
round (the first one rotating) so that a slow spell hits all of them. A call
is timed with CUDA events on a GPU (synchronised after each) and
``time.perf_counter`` on a CPU; all else is shared. A number is the median
over the rounds, with the interquartile range (IQR) in brackets; an overhead
is taken per round, ``variant / plain R50 - 1`` in the same round.

* Backbone: ResNet-50 of mmdet's architecture (style 'pytorch', BN in train
  mode, nothing frozen) in plain PyTorch, the attention after ``bn3`` of all
  16 bottlenecks (its defaults; ECA with ECA-Net's kernel sizes 3, 5, 5, 7
  by stage, as mmsa's configs), as (with the same random weights) the
  official composition ending the block as the official ResNets (``bn3``,
  the attention, ``out += identity; relu``), mmsa's block end
  ``block_end(conv3 output, attn, bn3, identity)`` (on CUDA one op: BN
  folded into the attention's statistics pass, the gate, the add and the
  ReLU in one element-wise pass), and ``torch.compile`` of the mmsa
  model. Train step = forward, backward of
  the stage outputs' means, SGD (momentum 0.9); inference = eval,
  ``no_grad``; peak = ``max_memory_allocated`` during a train step above
  the level before it (CUDA only). Inputs 2x3x800x1344 (det) and
  8x3x512x512 (seg), fp32 and autocast (fp16 on CUDA, bf16 on CPU; no grad
  scaler); cuDNN autotuning. ``--arch r50-v1c``: mmseg's ResNetV1c-50
  instead (the deep stem of UperNet's backbone), its plain form still
  named 'R50'.
* SA op: mmsa's ``ShuffleAttention`` (groups 64) vs the official
  composition and ``torch.compile`` of
  :func:`mmsa.ops.plane_gate_reference`, fp32,
  forward (``no_grad``) and forward+backward (``autograd.grad`` of input and
  parameters), at the ResNet-50 stage shapes of both inputs. Floor = passes
  over the input's bytes at the bandwidth of a 256 MiB ``dst.copy_(src)``
  (read + write counted): 3 forward (read x for the statistics, read x again
  and write y), 8 forward+backward (those 3; backward reads x and dy for the
  per-plane sums, reads both again and writes dx).
* Memory, counted two ways that must agree, per variant, in a train
  forward with BN in training and with ``norm_eval`` (BN frozen in eval,
  its affine learnable), the mmsa variants forced onto the GPU path
  (``MMSA_IMPL=triton``; on a CPU Triton's interpreter runs the kernels):
  the bytes saved for backward (``torch.autograd.graph.saved_tensors_hooks``,
  unique storages, parameters excluded) and the bytes still allocated after
  the forward (``torch.profiler`` with ``profile_memory=True``). Input
  ``--memory-input`` (default 1x3x128x160: the interpreter runs the
  kernels' programs one by one).
* First calls are timed apart (for a compiled variant: its compile). Once
  the run has compiled for ``--compile-budget`` seconds, compiled variants
  are left out; so is a variant whose first call fails (traceback printed).
  ``--out`` saves the result after each section.
* Targets, a verdict each from the medians at every input and
  precision: on CUDA, SA-, SE- and ECA-R50 train step, inference and train
  peak memory <= +3% over R50 (the aim: +0%); on a CPU, SA-R50's train step
  <= +5%; SGE and CBAM train overhead <= half their official composition's,
  measured beside them (figures of another day would not compare); every
  mmsa attention at least as fast as its official composition and its
  torch.compile; SA op forward+backward <= 2.5x floor at the first det
  stage, (2,256,200,336); both memory counts of SA-, SE- and ECA-R50 <= +3%
  over R50.
"""
import argparse
import contextlib
import copy
import datetime
import json
import os
import os.path as osp
import platform
import statistics
import sys
import time
import traceback
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mmsa.attention import (CBAM, EfficientChannelAttention, ShuffleAttention,
                            SpatialGroupEnhance, SqueezeExcitation)
from mmsa.ops import block_end, plane_gate_reference
from mmsa.testing import OFFICIAL_FORWARDS, randomize_

INPUTS = {'det': (2, 3, 800, 1344), 'seg': (8, 3, 512, 512)}
QUICK_INPUTS = {'det': (1, 3, 64, 96), 'seg': (1, 3, 64, 64)}
#: --arch: (name, deep stem); 'R50' is the plain backbone of either
ARCHS = {'r50': ('ResNet-50', False), 'r50-v1c': ('ResNetV1c-50', True)}
STAGES = ((256, 4), (512, 8), (1024, 16), (2048, 32))  # channels, stride
ATTENTIONS = ('SA', 'SE', 'ECA', 'SGE', 'CBAM')
FLOOR_PASSES = {'fwd': 3, 'fb': 8}
LIMITS = {  # device -> (attention, overhead, what, bound over R50)
    'cuda': tuple((name, key, what, 0.03)
                  for name in ('SA', 'SE', 'ECA')
                  for key, what in (('train_overhead', 'train step'),
                                    ('infer_overhead', 'inference'),
                                    ('peak_overhead', 'train peak memory'))),
    'cpu': (('SA', 'train_overhead', 'train step', 0.05), ),
}
MEMORY_LIMIT = 0.03  # both counts, SA/SE/ECA-R50 over R50
MEMORY_INPUT = (1, 3, 128, 160)
MEMORY_MODES = ('train', 'norm_eval')

#: ECA-Net's ResNet-50 kernel sizes by stage (its channels), as in mmsa's
#: ECA configs
ECA_KERNELS = {256: 3, 512: 5, 1024: 5, 2048: 7}
ATTENTION = {  # name -> (mmsa class, its R50 arguments, official forward)
    'SA': (ShuffleAttention, dict(groups=64), OFFICIAL_FORWARDS['SA']),
    'SE': (SqueezeExcitation, dict(reduction=16), OFFICIAL_FORWARDS['SE']),
    'ECA': (EfficientChannelAttention, dict(kernel_size=ECA_KERNELS),
            OFFICIAL_FORWARDS['ECA']),
    'SGE': (SpatialGroupEnhance, dict(groups=64), OFFICIAL_FORWARDS['SGE']),
    'CBAM': (CBAM, dict(reduction=16, kernel_size=7),
             OFFICIAL_FORWARDS['CBAM']),
}


def attention_options(name: str, channels: int) -> dict:
    """The R50 arguments of attention ``name`` in a block of ``channels``
    (a per-stage value is a dict by channels)."""
    return {k: v[channels] if isinstance(v, dict) else v
            for k, v in ATTENTION[name][1].items()}


class Official(nn.Module):
    """An official composition on an mmsa module's parameters, ending the
    block as the official ResNets do: ``out += identity; relu``."""

    def __init__(self, fn: Callable, m: nn.Module) -> None:
        super().__init__()
        self.fn, self.m = fn, m

    def forward(self, x: torch.Tensor, identity: torch.Tensor) -> torch.Tensor:
        out = self.fn(self.m, x)
        out += identity
        return out.relu_()


# ResNet-50 as mmdet builds it (style 'pytorch'), in plain PyTorch.


class Bottleneck(nn.Module):
    """mmdet's ``Bottleneck``: the stride on the 3x3 conv, the attention (if
    any) after ``bn3``; an mmsa attention ends the block by mmsa's op
    (``block_end``), an official composition as the official ResNets."""

    def __init__(self, inplanes: int, planes: int, stride: int,
                 attention: Optional[Callable[[int], nn.Module]]) -> None:
        super().__init__()
        out = planes * 4
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.attn = attention(out) if attention else None
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, out, 1, stride, bias=False),
                nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.conv3(out)
        identity = x if self.downsample is None else self.downsample(x)
        if self.attn is None:
            out = self.bn3(out)
            out += identity
            return self.relu(out)
        if isinstance(self.attn, Official):
            return self.attn(self.bn3(out), identity)
        return block_end(out, self.attn, self.bn3, identity)


class ResNet50(nn.Module):
    """ResNet-50 returning its 4 stage outputs (mmdet's out_indices); with
    ``deep_stem`` mmseg's ResNetV1c-50 (three 3x3 convs, 32-32-64 channels,
    instead of the 7x7 conv: UperNet's backbone)."""

    def __init__(self, attention: Optional[Callable] = None,
                 deep_stem: bool = False) -> None:
        super().__init__()
        if deep_stem:
            convs = []
            for cin, cout, stride in ((3, 32, 2), (32, 32, 1), (32, 64, 1)):
                convs += [nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
                          nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        else:
            convs = [nn.Conv2d(3, 64, 7, 2, 3, bias=False),
                     nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        self.stem = nn.Sequential(*convs, nn.MaxPool2d(3, 2, 1))
        self.layers, inplanes = nn.ModuleList(), 64
        for planes, blocks, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2),
                                       (512, 3, 2)):
            stage = []
            for _ in range(blocks):
                stage.append(Bottleneck(inplanes, planes, stride, attention))
                inplanes, stride = planes * 4, 1
            self.layers.append(nn.Sequential(*stage))

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        outs = [self.stem(x)]
        for layer in self.layers:
            outs.append(layer(outs[-1]))
        return tuple(outs[1:])


def build_models(attentions: Sequence[str], compiled: Sequence[str],
                 backend: str, device: str,
                 arch: str = 'r50') -> Dict[str, nn.Module]:
    """'R50' and, per attention, '<name> official', '<name> mmsa' and (if
    compiled) '<name> compile', the three with the same weights."""
    torch.manual_seed(0)
    deep_stem = ARCHS[arch][1]
    models = {'R50': ResNet50(deep_stem=deep_stem)}
    for name in attentions:
        cls, _, official = ATTENTION[name]
        model = ResNet50(lambda c, cls=cls, name=name: randomize_(
            cls(c, **attention_options(name, c)), seed=c),
            deep_stem=deep_stem)
        models[f'{name} official'] = theirs = copy.deepcopy(model)
        for block in theirs.modules():
            if isinstance(block, Bottleneck):
                block.attn = Official(official, block.attn)
        models[f'{name} mmsa'] = model
        if name in compiled:
            models[f'{name} compile'] = torch.compile(
                copy.deepcopy(model), backend=backend, dynamic=False)
    return {k: m.to(device) for k, m in models.items()}


# Timing and statistics.


def make_timer(device: str) -> Callable[[Callable[[], object]], float]:
    """Seconds of one call: CUDA events on a GPU, perf_counter on a CPU."""

    def cuda_timer(fn):
        start, end = (torch.cuda.Event(enable_timing=True) for _ in '12')
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3

    def cpu_timer(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    return cuda_timer if device == 'cuda' else cpu_timer


def interleaved(fns: Dict[str, Callable[[], object]], timer: Callable,
                rounds: int, warmup: int) -> Dict[str, List[float]]:
    """Seconds per round of each fn, after ``warmup`` untimed rounds; round
    ``r`` starts at the ``r``-th fn, so that no fn always runs first."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    names = list(fns)
    times: Dict[str, List[float]] = {k: [] for k in names}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)]:
            times[k].append(timer(fns[k]))
    return times


def quartiles(values: Sequence[float]) -> List[float]:
    """[first quartile, median, third quartile]."""
    if len(values) < 2:
        return [values[0]] * 3
    return statistics.quantiles(values, n=4, method='inclusive')


def overheads(times: Dict[str, List[float]],
              base: str) -> Dict[str, List[float]]:
    """Quartiles over rounds of each fn's time over ``base``'s in the same
    round, minus 1."""
    return {
        k: quartiles([t / b - 1 for t, b in zip(v, times[base])])
        for k, v in times.items()
    }


def peak_bytes(fn: Callable[[], object], device: str) -> Optional[int]:
    """CUDA memory allocated at the peak of ``fn`` above the level before
    it; None on a CPU."""
    if device != 'cuda':
        return None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


class FirstCalls:
    """Times the first calls (compiles, cuDNN's autotuning, Triton's JIT)
    apart from the rounds, and keeps a run going past a variant that fails.

    A compiled variant ('... compile') is left out once the run has spent
    ``budget`` seconds in first calls of compiled variants; a variant whose
    first call raises is left out with its traceback printed, except
    ``'R50'``, the base of every overhead.
    """

    def __init__(self, budget: float) -> None:
        self.budget, self.compiling = budget, 0.0
        self.left_out: List[str] = []

    def __call__(self, fns: Dict[str, Callable], timer: Callable, where: str
                 ) -> Tuple[Dict[str, Callable], Dict[str, float]]:
        """(the fns kept, seconds of their first calls)."""
        first = {}
        for k, fn in fns.items():
            compiled = k.endswith('compile')
            if compiled and self.compiling >= self.budget:
                self.leave_out(where, k, 'compile budget spent')
                continue
            try:
                first[k] = timer(fn)
            except Exception as err:  # noqa: B902 - reported, run goes on
                if k == 'R50':
                    raise
                traceback.print_exc(file=sys.stdout)
                self.leave_out(where, k, f'{type(err).__name__}: {err}')
                continue
            if compiled:
                self.compiling += first[k]
                print(f'[compile] {where} {k}: {first[k]:.1f} s (total '
                      f'{self.compiling:.0f} s)', flush=True)
        return {k: fns[k] for k in first}, first

    def leave_out(self, where: str, name: str, why: str) -> None:
        why = why.splitlines()[0][:160]
        self.left_out.append(f'{where} {name} ({why})')
        print(f'[left out] {where} {name}: {why}', flush=True)


# The benchmarks.


def autocast(device: str, precision: str):
    if precision == 'fp32':
        return contextlib.nullcontext()
    return torch.autocast(device, torch.float16 if device == 'cuda' else
                          torch.bfloat16)


def make_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
              precision: str, train: bool) -> Callable[[], None]:
    """A train step (forward, backward, SGD step, gradients freed as
    mmengine's optimizer wrapper does) or an inference call; the caller sets
    the model's mode (outside the timed call)."""

    def run():
        with torch.set_grad_enabled(train), autocast(x.device.type, precision):
            outs = model(x)
        if train:
            sum(o.float().mean() for o in outs).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    return run


def bench_backbones(args, timer, first_calls: FirstCalls, rows: List[dict],
                    save: Callable[[], None]) -> None:
    """Appends a row per model to ``rows``, saving after each input and
    precision."""
    models = build_models(args.attentions, args.compile, args.compile_backend,
                          args.device, args.arch)
    optims = {
        k: torch.optim.SGD(m.parameters(), lr=1e-4, momentum=0.9)
        for k, m in models.items()
    }
    for shape, size in args.inputs.items():
        x = torch.randn(size, device=args.device)
        for precision in args.precisions:
            where = f'{shape} {precision}'
            print(f'[backbone] {where}: {len(models)} models', flush=True)
            times, first, peaks = {}, {}, {}
            for mode in ('train', 'infer'):
                train = mode == 'train'
                for m in models.values():
                    m.train(train)
                fns, first[mode] = first_calls({
                    k: make_step(m, optims[k], x, precision, train)
                    for k, m in models.items()
                }, timer, f'{where} {mode}')
                times[mode] = interleaved(fns, timer, args.rounds,
                                          args.warmup)
                if train:
                    peaks = {k: peak_bytes(f, args.device)
                             for k, f in fns.items()}
            over = {k: overheads(t, 'R50') for k, t in times.items()}
            for k in times['train']:
                row = {'input': shape, 'size': list(size), 'model': k,
                       'precision': precision, 'arch': args.arch}
                for mode, t in times.items():
                    if k in t:
                        row[f'{mode}_ms'] = quartiles(t[k])[1] * 1e3
                        row[f'{mode}_overhead'] = over[mode][k]
                if peaks[k] is not None:
                    row['peak_mb'] = peaks[k] / 1e6
                    row['peak_overhead'] = peaks[k] / peaks['R50'] - 1
                if k.endswith('compile'):
                    row['compile_s'] = sum(f.get(k, 0) for f in first.values())
                rows.append(row)
                done = [f'train {row["train_ms"]:.1f} ms']
                done += [f'{key} {_pct(row[key])}' for key in
                         ('train_overhead', 'infer_overhead') if key in row]
                if 'peak_mb' in row:
                    done.append(f'peak_overhead {row["peak_overhead"]:+.1%}')
                print(f'[backbone] {where} {k}: {", ".join(done)}',
                      flush=True)
            save()


def copy_bandwidth(numel: int, device: str, timer, rounds: int) -> float:
    """Bytes per second of ``dst.copy_(src)``, read + write counted."""
    src = torch.randn(numel, device=device)
    dst = torch.empty_like(src)
    times = interleaved({'copy': lambda: dst.copy_(src)}, timer, rounds, 1)
    return 2 * numel * 4 / quartiles(times['copy'])[1]


def bench_ops(args, timer, first_calls: FirstCalls, result: dict,
              save: Callable[[], None]) -> None:
    """Sets ``result['bandwidth_gbs']`` and appends a row per shape to
    ``result['ops']``, saving after each."""
    numel = 2**22 if args.quick else 2**26  # 16 or 256 MiB of float32
    bandwidth = copy_bandwidth(numel, args.device, timer, args.rounds)
    result['bandwidth_gbs'] = bandwidth / 1e9
    print(f'[op] copy bandwidth {bandwidth / 1e9:.0f} GB/s', flush=True)
    compiled = torch.compile(plane_gate_reference, dynamic=False,
                             backend=args.compile_backend)
    for name, (n, _, h, w) in args.inputs.items():
        for channels, stride in STAGES:
            shape = (n, channels, h // stride, w // stride)
            sa = randomize_(ShuffleAttention(channels, groups=64), channels)
            sa = sa.to(args.device)
            params = list(sa.parameters())
            x = torch.randn(shape, device=args.device)
            xg, dy = x.clone().requires_grad_(), torch.randn_like(x)
            ops = {
                'official': lambda t: OFFICIAL_FORWARDS['SA'](sa, t),
                'mmsa': sa,
                'compile': lambda t: compiled(t, sa.plane_gate())
            }
            if 'SA' not in args.compile:
                del ops['compile']
            row = {'input': name, 'shape': list(shape)}
            for mode, passes in FLOOR_PASSES.items():
                if mode == 'fwd':
                    fns = {k: lambda f=f: f(x) for k, f in ops.items()}
                else:
                    fns = {
                        k: lambda f=f: torch.autograd.grad(
                            f(xg), [xg] + params, dy)
                        for k, f in ops.items()
                    }
                where = f'op {name} {tuple(shape)} {mode}'
                with torch.set_grad_enabled(mode == 'fb'):
                    fns, _ = first_calls(fns, timer, where)
                    times = interleaved(fns, timer, args.rounds, args.warmup)
                row[f'floor_{mode}_ms'] = (passes * x.numel() * 4 /
                                           bandwidth * 1e3)
                for k, v in times.items():
                    row[f'{k}_{mode}_ms'] = [t * 1e3 for t in quartiles(v)]
            result['ops'].append(row)
            save()
            fb = ', '.join(f'{k} {row[f"{k}_fb_ms"][1]:.3f}' for k in ops
                           if f'{k}_fb_ms' in row)
            print(f'[op] {name} {tuple(shape)}: fwd+bwd ms {fb}, floor '
                  f'{row["floor_fb_ms"]:.3f}', flush=True)


def memory_counts(model: nn.Module, x: torch.Tensor) -> Tuple[int, int]:
    """(bytes saved for backward, bytes still allocated after the forward)
    of one train forward of ``model``: the unique storages autograd's
    saved-tensor hooks see, parameters excluded, and the net allocations
    torch's profiler records (``profile_memory=True``)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    cuda = x.device.type == 'cuda'
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
        torch.cuda.synchronize()
    with torch.profiler.profile(activities=activities,
                                profile_memory=True) as prof:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            outs = model(x)
        if cuda:
            torch.cuda.synchronize()
    key = 'self_device_memory_usage' if cuda else 'self_cpu_memory_usage'
    allocated = sum(getattr(e, key, 0) or 0 for e in prof.events())
    del outs
    return (sum(n for ptr, n in saved.items() if ptr not in params),
            allocated)


@contextlib.contextmanager
def impl_env(value: Optional[str]):
    """``MMSA_IMPL`` set to ``value`` (None: as it was) for a block."""
    old = os.environ.get('MMSA_IMPL')
    if value is not None:
        os.environ['MMSA_IMPL'] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop('MMSA_IMPL', None)
        else:
            os.environ['MMSA_IMPL'] = old


def bench_memory(args, result: dict, save: Callable[[], None]) -> None:
    """Appends a row per model and BN mode to ``result['memory']``: both
    memory counts of a train forward, the mmsa variants on the GPU path
    (the Triton kernels; on a CPU under Triton's interpreter)."""
    from mmsa.ops.triton_support import interpreting, triton_unavailable
    gpu_path = args.device == 'cuda' or interpreting()
    reason = triton_unavailable() or (None if gpu_path else (
        'TRITON_INTERPRET=1 must be set before mmsa runs a kernel'))
    models = build_models(args.attentions, [], 'inductor', args.device,
                          args.arch)
    x = torch.randn(args.memory_input, device=args.device)
    for mode in MEMORY_MODES:
        counts = {}
        for k, model in models.items():
            if k.endswith('mmsa') and reason:
                result['left_out'].append(f'memory {mode} {k} ({reason})')
                continue
            model.train()
            if mode == 'norm_eval':  # mmdet's norm_eval: BN in eval
                for m in model.modules():
                    if isinstance(m, nn.modules.batchnorm._BatchNorm):
                        m.eval()
            with impl_env('triton' if k.endswith('mmsa') else None):
                counts[k] = memory_counts(model, x)
        base = counts['R50']
        for k, (saved, allocated) in counts.items():
            row = dict(mode=mode, model=k, size=list(args.memory_input),
                       saved_mb=saved / 1e6, allocated_mb=allocated / 1e6,
                       saved_overhead=saved / base[0] - 1,
                       allocated_overhead=allocated / base[1] - 1)
            result['memory'].append(row)
            print(f'[memory] {mode} {k}: saved {row["saved_mb"]:.1f} MB '
                  f'({row["saved_overhead"]:+.1%}), allocated '
                  f'{row["allocated_mb"]:.1f} MB '
                  f'({row["allocated_overhead"]:+.1%})', flush=True)
        save()


# Verdicts and the report.


def target_rows(result: dict) -> List[Tuple[str, str, str]]:
    """(target, measured, verdict) for each target that the
    run measured: 'met' where the median at every input and precision is
    within it, else 'missed'."""
    rows = []
    bb = {(r['input'], r['precision'], r['model']): r
          for r in result['backbones']}

    def values(model, key):  # [(where, median)] where measured
        return [(f'{i} {p}', v[1] if isinstance(v, list) else v)
                for (i, p, m), r in bb.items()
                if m == model and (v := r.get(key)) is not None]

    def judge(target, found, fmt, ok):  # more than 4 values: the range
        if len(found) > 4:
            ranked = sorted(found, key=lambda f: f[1])
            measured = (f'{fmt(ranked[0][1])} to {fmt(ranked[-1][1])} '
                        f'(highest: {ranked[-1][0]})')
        else:
            measured = ', '.join(f'{w} {fmt(v)}' for w, v in found)
        if found:
            rows.append((target, measured,
                         'met' if all(ok(v) for _, v in found) else 'missed'))

    for name, key, label, bound in LIMITS[result.get('device', 'cpu')]:
        judge(f'{name}-R50 {label} <= +{bound:.0%} over R50',
              values(f'{name} mmsa', key), lambda v: f'{v:+.1%}',
              lambda v, bound=bound: v <= bound)
    memory = result.get('memory', [])
    for name in ('SA', 'SE', 'ECA'):
        found = [(f'{r["mode"]} {what}', r[f'{what}_overhead'])
                 for r in memory if r['model'] == f'{name} mmsa'
                 for what in ('saved', 'allocated')]
        judge(f'{name}-R50 memory (saved for backward, allocated after the '
              f'forward) <= +{MEMORY_LIMIT:.0%} over R50', found,
              lambda v: f'{v:+.1%}', lambda v: v <= MEMORY_LIMIT)
    for name in ('SGE', 'CBAM'):
        theirs = dict(values(f'{name} official', 'train_overhead'))
        judge(f'{name}-R50 train overhead <= half the official one\'s',
              [(w, (v, theirs[w]))
               for w, v in values(f'{name} mmsa', 'train_overhead')
               if w in theirs], lambda v: f'{v[0]:+.1%} vs {v[1]:+.1%}',
              lambda v: v[0] <= v[1] / 2)
    def spread(model, key):  # {where: [q1, median, q3]}
        return {f'{i} {p}': v for (i, p, m), r in bb.items()
                if m == model and isinstance(v := r.get(key), list)}

    for name in ATTENTIONS:
        for other in ('official', 'compile'):
            found = []
            for mode in ('train', 'infer'):
                theirs = dict(values(f'{name} {other}', f'{mode}_ms'))
                ours_over = spread(f'{name} mmsa', f'{mode}_overhead')
                their_over = spread(f'{name} {other}', f'{mode}_overhead')
                # shown: the ratio of the medians; met: mmsa's median
                # overhead over R50 within theirs' spread (at most its third
                # quartile), so that two equal compositions pass
                found += [(f'{w} {mode}', (v / theirs[w], (
                    ours_over[w][1] <= their_over[w][2]
                    if w in ours_over and w in their_over
                    else v <= theirs[w])))
                          for w, v in values(f'{name} mmsa', f'{mode}_ms')
                          if w in theirs]
            judge(f'{name}-R50: mmsa at least as fast as {other}', found,
                  lambda v: f'x{v[0]:.2f}', lambda v: v[1])
    ops = result['ops']
    for r in [r for r in ops if r['input'] == 'det'][:1]:  # C=256
        if 'mmsa_fb_ms' not in r:
            continue
        judge(f'SA op fwd+bwd <= 2.5x floor at {tuple(r["shape"])}',
              [(r['input'], r['mmsa_fb_ms'][1] / r['floor_fb_ms'])],
              lambda v: f'{v:.2f}x', lambda v: v <= 2.5)
    for other in ('official', 'compile'):
        judge(f'SA op: mmsa at least as fast as {other}',
              [(f'{r["input"]} C={r["shape"][1]} {mode}',
                r[f'mmsa_{mode}_ms'][1] / r[f'{other}_{mode}_ms'][1])
               for r in ops for mode in FLOOR_PASSES
               if f'{other}_{mode}_ms' in r and f'mmsa_{mode}_ms' in r],
              lambda v: f'x{v:.2f}', lambda v: v <= 1)
    return rows


def _pct(q: Sequence[float]) -> str:
    return f'{q[1]:+.1%} [{q[0]:+.1%}, {q[2]:+.1%}]'


def _table(caption: str, head: Sequence[str], rows: List[list]) -> List[str]:
    return ['', caption, '', '| ' + ' | '.join(head) + ' |',
            '|---' * len(head) + '|'
            ] + ['| ' + ' | '.join(map(str, r)) + ' |' for r in rows]


def markdown(result: dict) -> str:
    """The run as markdown: the op table, a backbone table per input and
    precision, a summary (variant x input x precision), compile times and
    the verdicts."""
    lines = [f'{result["machine"]}; torch {result["torch"]}; '
             f'{result["date"]}; {result["rounds"]} rounds, medians '
             '[interquartile range].']
    if result['ops']:
        rows = []
        for r in result['ops']:
            rows.append([r['input'], tuple(r['shape'])])
            for mode in FLOOR_PASSES:
                floor = r[f'floor_{mode}_ms']
                rows[-1].append(f'{floor:.3f}')
                for k in ('official', 'mmsa', 'compile'):
                    t = r.get(f'{k}_{mode}_ms', [0, 0, 0])[1]
                    rows[-1].append(f'{t:.3f} ({t / floor:.1f}x)' if t else
                                    '-')
        lines += _table(
            f'SA op, fp32, ms (x floor); copy bandwidth '
            f'{result["bandwidth_gbs"]:.0f} GB/s; floor = 3 passes over the '
            'input forward, 8 forward+backward:',
            ['input', 'shape', 'floor fwd', 'official', 'mmsa', 'compile',
             'floor fwd+bwd', 'official', 'mmsa', 'compile'], rows)
    amp = 'fp16' if result['device'] == 'cuda' else 'bf16'
    bb = result['backbones']
    combos = list(dict.fromkeys((r['input'], r['precision']) for r in bb))
    for combo in combos:
        rows = [r for r in bb if (r['input'], r['precision']) == combo]
        peak = 'peak_mb' in rows[0]  # CUDA only
        cells = []
        for r in rows:
            cells.append([r['model']])
            for mode in ('train', 'infer'):
                cells[-1] += ([f'{r[f"{mode}_ms"]:.1f}',
                               _pct(r[f'{mode}_overhead'])]
                              if f'{mode}_ms' in r else ['-', '-'])
            if peak:
                cells[-1] += [f'{r["peak_mb"]:.0f}',
                              f'{r["peak_overhead"]:+.1%}']
        precision = 'fp32' if combo[1] == 'fp32' else f'{amp} autocast'
        lines += _table(
            f'{ARCHS[rows[0].get("arch", "r50")][0]}, input '
            f'{tuple(rows[0]["size"])}, {precision}; '
            'overheads over R50 in the same round:',
            ['model', 'train ms', 'overhead', 'inference ms', 'overhead'] +
            ['peak MB', 'overhead'] * peak, cells)
    if bb:
        lines += summary(bb, combos)
    memory = result.get('memory', [])
    if memory:
        lines += _table(
            f'Memory of a train forward, input {tuple(memory[0]["size"])}, '
            'fp32, the mmsa variants on the GPU path (Triton kernels'
            + ('' if result['device'] == 'cuda' else
               ", run by Triton's interpreter") + '); overheads over R50 '
            'in the same BN mode:',
            ['BN', 'model', 'saved for backward MB', 'overhead',
             'allocated after forward MB', 'overhead'],
            [[r['mode'], r['model'], f'{r["saved_mb"]:.1f}',
              f'{r["saved_overhead"]:+.1%}', f'{r["allocated_mb"]:.1f}',
              f'{r["allocated_overhead"]:+.1%}'] for r in memory])
    compiles = [f'{r["input"]} {r["precision"]} {r["model"]} '
                f'{r["compile_s"]:.0f} s' for r in bb if 'compile_s' in r]
    if compiles:
        lines += ['', f'Compile time (first calls): {", ".join(compiles)}.']
    if result['left_out']:
        lines += ['', f'Left out: {"; ".join(result["left_out"])}.']
    targets = target_rows(result)
    if targets:
        lines += _table('Targets, by the medians:',
                        ['target', 'measured', 'verdict'], targets)
    return '\n'.join(lines) + '\n'


def summary(backbones: List[dict], combos: List[tuple]) -> List[str]:
    """The summary table: per variant, the median overheads over R50 of the
    train step and the inference at each input and precision, and the train
    peak memory at the first (CUDA only)."""
    bb = {(r['input'], r['precision'], r['model']): r for r in backbones}
    peak = 'peak_mb' in backbones[0]
    rows = []
    for m in list(dict.fromkeys(r['model'] for r in backbones))[1:]:
        rows.append([m])
        for key in ('train_overhead', 'infer_overhead'):
            for i, p in combos:
                value = bb.get((i, p, m), {}).get(key)
                rows[-1].append('-' if value is None else f'{value[1]:+.0%}')
        r = bb.get(combos[0] + (m, ), {})
        if peak:
            rows[-1].append(f'{r["peak_mb"] / 1e3:.2f} GB '
                            f'({r["peak_overhead"]:+.0%})' if r else '-')
    return _table('Summary, median overheads over R50:', ['variant'] + [
        f'{mode} {i} {p}' for mode in ('train', 'inference') for i, p in combos
    ] + [f'peak {" ".join(combos[0])}'] * peak, rows)


def machine(device: str) -> str:
    if device == 'cuda':
        return (f'{torch.cuda.get_device_name()}, CUDA {torch.version.cuda}'
                f', cuDNN {torch.backends.cudnn.version()}')
    return (f'{platform.processor() or platform.machine()}, '
            f'{os.cpu_count()} cores, {torch.get_num_threads()} threads')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    add = parser.add_argument
    add('--device', default='cpu', choices=['cpu', 'cuda'])
    add('--quick', action='store_true', help='tiny inputs, 2 rounds')
    add('--rounds', type=int, default=15, help='timed rounds')
    add('--warmup', type=int, default=3, help='untimed rounds before')
    add('--shapes', nargs='+', choices=list(INPUTS), default=list(INPUTS))
    add('--arch', choices=list(ARCHS), default='r50',
        help="the backbone: 'r50' mmdet's ResNet-50 (the detectors'), "
        "'r50-v1c' mmseg's ResNetV1c-50 (UperNet's)")
    add('--input', type=int, nargs=4, metavar=('N', 'C', 'H', 'W'),
        help="one other input instead (named 'input'), e.g. 2 3 512 512")
    add('--precisions', nargs='+', choices=['fp32', 'amp'],
        help='default: fp32 and amp on cuda, fp32 on cpu')
    add('--attentions', nargs='*', choices=ATTENTIONS, default=ATTENTIONS)
    add('--compile', nargs='*', choices=ATTENTIONS,
        help='attentions whose model (for SA also the op) is timed under '
        'torch.compile too; default: SA on cuda, none on cpu')
    add('--compile-budget', type=float, default=200,
        help='seconds of compiling after which compiled variants stop')
    add('--compile-backend', default='inductor',
        help="'aot_eager' checks the harness without code generation")
    add('--skip-ops', action='store_true')
    add('--skip-backbones', action='store_true')
    add('--skip-memory', action='store_true')
    add('--memory-input', type=int, nargs=4, metavar=('N', 'C', 'H', 'W'),
        default=MEMORY_INPUT, help='input of the memory counts (default '
        f'{" ".join(map(str, MEMORY_INPUT))})')
    add('--out', help='write OUT.md and OUT.json (a suffix is replaced)')
    add('--load', metavar='RESULT.json', help='render a run saved by --out')
    args = parser.parse_args(argv)
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no CUDA device is available')
    if args.rounds < 1:
        parser.error(f'--rounds {args.rounds}: pass 1 or more')
    if args.quick:
        args.rounds, args.warmup = min(args.rounds, 2), min(args.warmup, 1)
    cuda = args.device == 'cuda'
    if args.precisions is None:
        args.precisions = ['fp32', 'amp'] if cuda else ['fp32']
    if args.compile is None:
        args.compile = ['SA'] if cuda else []
    inputs = QUICK_INPUTS if args.quick else INPUTS
    if args.quick and tuple(args.memory_input) == MEMORY_INPUT:
        args.memory_input = QUICK_INPUTS['seg']
    args.inputs = {k: inputs[k] for k in args.shapes}
    if args.input:
        args.inputs = {'input': tuple(args.input)}
    return args


RESULT_KEYS = ('date', 'machine', 'device', 'torch', 'rounds', 'ops',
               'backbones', 'left_out')


def load_result(path: str) -> dict:
    """A run saved by ``--out`` (its JSON), for ``--load``."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError) as err:
        raise SystemExit(f'--load {path}: cannot read a JSON result ({err});'
                         ' pass the .json that --out wrote') from None
    missing = [k for k in RESULT_KEYS if not isinstance(result, dict)
               or k not in result]
    if missing:
        raise SystemExit(f'--load {path}: not a benchmark_attention result '
                         f'(no {", ".join(missing)}); pass the .json that '
                         '--out wrote')
    return result


def measure(args: argparse.Namespace) -> dict:
    """Runs the benchmarks; with ``--out``, the result so far is saved after
    each section, so that a run stopped by a time limit keeps its tables."""
    if args.device == 'cuda':
        torch.backends.cudnn.benchmark = True
    if args.compile:  # a graph per input, precision and mode
        from torch import _dynamo
        for name in ('recompile_limit', 'cache_size_limit'):
            if hasattr(_dynamo.config, name):
                setattr(_dynamo.config, name, 64)
    timer = make_timer(args.device)
    first_calls = FirstCalls(args.compile_budget)
    result = {
        'date': datetime.datetime.now().isoformat(timespec='minutes'),
        'machine': machine(args.device),
        'device': args.device,
        'torch': torch.__version__,
        'command': ' '.join([osp.relpath(sys.argv[0])] + sys.argv[1:]),
        'rounds': args.rounds,
        'bandwidth_gbs': None,
        'ops': [],
        'backbones': [],
        'memory': [],
        'left_out': first_calls.left_out
    }

    def save():
        if args.out:
            write(result, args.out)

    t0 = time.perf_counter()
    if not args.skip_ops:
        bench_ops(args, timer, first_calls, result, save)
    if not args.skip_backbones:
        bench_backbones(args, timer, first_calls, result['backbones'], save)
    if not args.skip_memory:
        bench_memory(args, result, save)
    print(f'[done] {time.perf_counter() - t0:.0f} s, of which compiling '
          f'{first_calls.compiling:.0f} s', flush=True)
    return result


def write(result: dict, out: str) -> str:
    """Writes ``OUT.md`` and ``OUT.json`` (any suffix of ``out`` replaced);
    returns the markdown."""
    table = markdown(result)
    stem = osp.splitext(out)[0]
    with open(stem + '.md', 'w') as f:
        f.write(table)
    with open(stem + '.json', 'w') as f:
        json.dump(result, f, indent=1)
    return table


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    if args.device == 'cpu' and not args.skip_memory:
        # the memory counts run the GPU path's kernels in Triton's
        # interpreter, which must be chosen before they are first loaded
        os.environ.setdefault('TRITON_INTERPRET', '1')
    result = load_result(args.load) if args.load else measure(args)
    print(write(result, args.out) if args.out else markdown(result),
          flush=True)
    return result


if __name__ == '__main__':
    main()
