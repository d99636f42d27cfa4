"""VAN backbone against the official VAN-Classification structure and math."""
import argparse
import importlib.util
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from testing_utils import assert_close, load_tool, num_params, randomize_

from mmsa.attention import LargeKernelAttention
from mmsa.converters import WrongSourceError
from mmsa.converters.van import convert_van
from mmsa.models import VAN
from mmsa.models.backbones.van import VANBlock

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(embed_dims=(8, 16, 24, 32), depths=(1, 2, 1, 1),
            mlp_ratios=(8, 8, 4, 4))

# arch -> (exact count with a 1000-class head, the paper's Table 2 in M)
PAPER_PARAMS = {
    'b0': (4_105_800, 4.1),
    'b1': (13_861_800, 13.9),
    'b2': (26_578_472, 26.6),
    'b3': (44_765_608, 44.8),
}


def official_shapes(embed_dims, depths, mlp_ratios, in_channels=3,
                    num_classes=1000):
    """Parameter/buffer names and shapes of the official ``VAN`` module.

    Written from VAN-Classification ``models/van.py``: OverlapPatchEmbed
    (``proj`` conv with bias, ``norm`` BatchNorm2d), Block (``norm1``,
    ``attn.proj_1``, ``attn.spatial_gating_unit.{conv0,conv_spatial,conv1}``,
    ``attn.proj_2``, ``norm2``, ``mlp.fc1``, ``mlp.dwconv.dwconv``,
    ``mlp.fc2``, ``layer_scale_1/2``), a LayerNorm per stage and ``head``.
    Returns ``(params, buffers)``, two dicts of name -> shape.
    """
    params, buffers = OrderedDict(), OrderedDict()

    def conv(name, c_out, c_in_per_group, k):
        params[f'{name}.weight'] = (c_out, c_in_per_group, k, k)
        params[f'{name}.bias'] = (c_out, )

    def norm(name, c, batch_norm=True):
        params[f'{name}.weight'] = params[f'{name}.bias'] = (c, )
        if batch_norm:
            buffers[f'{name}.running_mean'] = (c, )
            buffers[f'{name}.running_var'] = (c, )
            buffers[f'{name}.num_batches_tracked'] = ()

    prev = in_channels
    for i, (c, depth, ratio) in enumerate(zip(embed_dims, depths,
                                              mlp_ratios)):
        conv(f'patch_embed{i + 1}.proj', c, prev, 7 if i == 0 else 3)
        norm(f'patch_embed{i + 1}.norm', c)
        hidden = int(c * ratio)
        for j in range(depth):
            p = f'block{i + 1}.{j}.'
            params[p + 'layer_scale_1'] = params[p + 'layer_scale_2'] = (c, )
            norm(p + 'norm1', c)
            conv(p + 'attn.proj_1', c, c, 1)
            conv(p + 'attn.spatial_gating_unit.conv0', c, 1, 5)
            conv(p + 'attn.spatial_gating_unit.conv_spatial', c, 1, 7)
            conv(p + 'attn.spatial_gating_unit.conv1', c, c, 1)
            conv(p + 'attn.proj_2', c, c, 1)
            norm(p + 'norm2', c)
            conv(p + 'mlp.fc1', hidden, c, 1)
            conv(p + 'mlp.dwconv.dwconv', hidden, 1, 3)
            conv(p + 'mlp.fc2', c, hidden, 1)
        norm(f'norm{i + 1}', c, batch_norm=False)
        prev = c
    params['head.weight'] = (num_classes, prev)
    params['head.bias'] = (num_classes, )
    return params, buffers


def _numel(shape) -> int:
    return int(torch.Size(shape).numel())


@pytest.mark.parametrize('arch', sorted(PAPER_PARAMS))
def test_parameter_count_with_1000_class_head_equals_paper(arch):
    exact, paper_millions = PAPER_PARAMS[arch]
    backbone = VAN(arch)
    classifier = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(backbone.embed_dims[-1], 1000))
    ours = num_params(backbone) + num_params(classifier)
    params, _ = official_shapes(**VAN.arch_settings[arch])
    assert ours == sum(_numel(s) for s in params.values()) == exact
    assert round(ours / 1e6, 1) == paper_millions


def test_variants_follow_official_repository():
    dims_b1_b3 = (64, 128, 320, 512)
    assert VAN.arch_settings == {
        'b0': dict(embed_dims=(32, 64, 160, 256), depths=(3, 3, 5, 2),
                   mlp_ratios=(8, 8, 4, 4)),
        'b1': dict(embed_dims=dims_b1_b3, depths=(2, 2, 4, 2),
                   mlp_ratios=(8, 8, 4, 4)),
        'b2': dict(embed_dims=dims_b1_b3, depths=(3, 3, 12, 3),
                   mlp_ratios=(8, 8, 4, 4)),
        'b3': dict(embed_dims=dims_b1_b3, depths=(3, 5, 27, 3),
                   mlp_ratios=(8, 8, 4, 4)),
    }


def _randomize_scaled(module: nn.Module, seed: int = 0) -> nn.Module:
    """Random parameters and BN statistics, convs scaled by 1/sqrt(fan-in).

    The scaling keeps activations O(1) through the stacked LKA products, so
    an absolute 1e-5 compares the math, not fp32 rounding of huge values.
    """
    randomize_(module, seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.Conv2d):
                m.weight.mul_(m.weight[0].numel()**-0.5)
    return module


def _conv(x, sd, name, **kwargs):
    return F.conv2d(x, sd[f'{name}.weight'], sd[f'{name}.bias'], **kwargs)


def _batch_norm(x, sd, name):
    return F.batch_norm(x, sd[f'{name}.running_mean'],
                        sd[f'{name}.running_var'], sd[f'{name}.weight'],
                        sd[f'{name}.bias'], False, 0., 1e-5)


def official_attention(x, sd, p):
    """``Attention.forward``: proj_2(LKA(GELU(proj_1(x)))) + shortcut."""
    c = x.shape[1]
    u = F.gelu(_conv(x, sd, p + 'proj_1'))
    attn = _conv(u, sd, p + 'spatial_gating_unit.conv0', padding=2, groups=c)
    attn = _conv(attn, sd, p + 'spatial_gating_unit.conv_spatial', padding=9,
                 dilation=3, groups=c)
    attn = _conv(attn, sd, p + 'spatial_gating_unit.conv1')
    return _conv(u * attn, sd, p + 'proj_2') + x


def official_mlp(x, sd, p):
    """``Mlp.forward`` (dropout 0): fc1, 3x3 depthwise, GELU, fc2."""
    h = _conv(x, sd, p + 'fc1')
    h = _conv(h, sd, p + 'dwconv.dwconv', padding=1, groups=h.shape[1])
    return _conv(F.gelu(h), sd, p + 'fc2')


def official_block(x, sd, p):
    """``Block.forward`` in eval mode (DropPath is the identity)."""
    ls1 = sd[p + 'layer_scale_1'].unsqueeze(-1).unsqueeze(-1)
    ls2 = sd[p + 'layer_scale_2'].unsqueeze(-1).unsqueeze(-1)
    x = x + ls1 * official_attention(_batch_norm(x, sd, p + 'norm1'), sd,
                                     p + 'attn.')
    return x + ls2 * official_mlp(_batch_norm(x, sd, p + 'norm2'), sd,
                                  p + 'mlp.')


def official_features(x, sd, depths):
    """VAN-Segmentation's ``VAN.forward``: each stage after its LayerNorm."""
    outs = []
    for i, depth in enumerate(depths):
        kernel, stride = (7, 4) if i == 0 else (3, 2)
        x = _conv(x, sd, f'patch_embed{i + 1}.proj', stride=stride,
                  padding=kernel // 2)
        x = _batch_norm(x, sd, f'patch_embed{i + 1}.norm')
        for j in range(depth):
            x = official_block(x, sd, f'block{i + 1}.{j}.')
        b, c, h, w = x.shape
        tokens = F.layer_norm(x.flatten(2).transpose(1, 2), (c, ),
                              sd[f'norm{i + 1}.weight'],
                              sd[f'norm{i + 1}.bias'], eps=1e-6)
        x = tokens.reshape(b, h, w, c).permute(0, 3, 1, 2)
        outs.append(x)
    return outs


def test_block_matches_official_block():
    block = _randomize_scaled(VANBlock(16, mlp_ratio=4), seed=1).eval()
    assert isinstance(block.attn.spatial_gating_unit, LargeKernelAttention)
    x = torch.randn(2, 16, 9, 11)
    with torch.no_grad():
        expected = official_block(x, block.state_dict(), '')
        assert_close(block(x), expected, atol=1e-5)


def test_backbone_matches_official_forward():
    model = _randomize_scaled(VAN(TINY), seed=2).eval()
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        expected = official_features(x, model.state_dict(), TINY['depths'])
        outs = model(x)
    assert len(outs) == 4
    for out, ref in zip(outs, expected):
        assert ref.abs().max() > 0.1  # the comparison is not vacuous
        assert_close(out, ref, atol=1e-5)


def test_outputs_shapes_and_strides():
    model = VAN('b0').eval()
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs = model(x)
    for out, dim, stride in zip(outs, (32, 64, 160, 256), (4, 8, 16, 32)):
        assert out.shape == (1, dim, 64 // stride, 96 // stride)
        assert out.is_contiguous()
    model = VAN(TINY, out_indices=(1, 3)).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [16, 32]


def test_frozen_stages_and_norm_eval():
    model = VAN(TINY, frozen_stages=2, norm_eval=False)
    assert model.train() is model
    for i in range(4):
        frozen = i < 2
        for name in (f'patch_embed{i + 1}', f'block{i + 1}', f'norm{i + 1}'):
            module = getattr(model, name)
            assert all(m.training != frozen for m in module.modules()), name
            assert all(p.requires_grad != frozen
                       for p in module.parameters()), name
    stats = model.patch_embed2.norm.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(model.patch_embed2.norm.running_mean, stats)
    assert not torch.equal(model.block3[0].norm1.running_mean,
                           torch.zeros(24))

    model = VAN(TINY, norm_eval=True).train()
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert model.block1[0].attn.training
    assert all(p.requires_grad for p in model.parameters())


def test_drop_path_rises_linearly_over_blocks():
    model = VAN(TINY, drop_path_rate=0.4)
    blocks = [b for i in range(4) for b in getattr(model, f'block{i + 1}')]
    assert isinstance(blocks[0].drop_path, nn.Identity)
    rates = [b.drop_path.drop_prob for b in blocks[1:]]
    assert rates == pytest.approx([0.1, 0.2, 0.3, 0.4])


def test_official_init_without_pretrained():
    assert torch.all(VAN(TINY).block2[1].layer_scale_1 == 1e-2)
    model = _randomize_scaled(VAN(TINY))
    model.init_weights()
    block = model.block2[1]
    assert torch.all(block.attn.proj_1.bias == 0)
    assert torch.all(model.norm3.weight == 1) and torch.all(
        model.norm3.bias == 0)
    fc1 = block.mlp.fc1.weight  # fan-out 1*1*128
    assert fc1.std().item() == pytest.approx((2 / 128)**0.5, rel=0.1)


@pytest.mark.parametrize('kwargs,error', [
    (dict(arch='b9'), KeyError),
    (dict(arch=dict(embed_dims=(8, 16), depths=(1, 1))), ValueError),
    (dict(arch=dict(TINY, depths=(1, 1, 1))), ValueError),
    (dict(out_indices=(4, )), ValueError),
    (dict(frozen_stages=5), ValueError),
])
def test_invalid_arguments_raise(kwargs, error):
    with pytest.raises(error, match='VAN'):
        VAN(**kwargs)


def _official_checkpoint(arch, seed=0):
    """A synthetic VAN-Classification checkpoint: DDP keys, head, nesting."""
    params, buffers = official_shapes(**arch)
    gen = torch.Generator().manual_seed(seed)
    state = OrderedDict()
    for name, shape in {**params, **buffers}.items():
        if name.endswith('num_batches_tracked'):
            state[f'module.{name}'] = torch.tensor(7)
        else:
            state[f'module.{name}'] = torch.randn(shape, generator=gen)
    return {'state_dict': state, 'epoch': 300}


def test_converter_loads_official_checkpoint_strictly():
    checkpoint = _official_checkpoint(TINY)
    converted = convert_van(checkpoint)
    assert not any(k.startswith(('head.', 'module.')) for k in converted)
    model = VAN(TINY)
    model.load_state_dict(converted, strict=True)
    src = checkpoint['state_dict']
    for key, value in model.state_dict().items():
        assert torch.equal(value, src[f'module.{key}']), key
    flat = {k[len('module.'):]: v for k, v in src.items()}
    assert list(convert_van(flat)) == list(converted)


def test_converter_rejects_other_checkpoints():
    with pytest.raises(WrongSourceError, match='patch_embed1.proj.weight'):
        convert_van({'conv1.weight': torch.zeros(1)})


def test_converter_cli_and_pretrained_init(tmp_path):
    checkpoint = _official_checkpoint(TINY, seed=3)
    checkpoint['args'] = argparse.Namespace(model='van_b0', lr=1e-3)
    src, dst = tmp_path / 'van_tiny.pth.tar', tmp_path / 'out' / 'van.pth'
    torch.save(checkpoint, src)
    load_tool('tools/model_converters/van2mmsa.py').main([str(src), str(dst)])
    saved = torch.load(dst, map_location='cpu', weights_only=True)
    assert saved['meta']['source'] == 'van_tiny.pth.tar'
    assert list(saved['state_dict']) == list(convert_van(checkpoint))

    model = VAN(TINY, init_cfg=dict(type='Pretrained', checkpoint=str(dst)))
    model.init_weights()
    for key, value in model.state_dict().items():
        assert torch.equal(value, saved['state_dict'][key]), key


def test_van_is_buildable_under_both_frameworks():
    from mmengine.registry import MODELS
    for scope in ('mmdet', 'mmseg'):
        if importlib.util.find_spec(scope) is None:
            continue
        registry = importlib.import_module(f'{scope}.registry').MODELS
        assert isinstance(registry.build(dict(type='VAN', arch=TINY)), VAN)
    assert isinstance(MODELS.build(dict(type='VAN', arch=TINY)), VAN)


def test_lka_as_block_attention_in_resnet():
    pytest.importorskip('mmdet')
    from mmsa.models.backbones.det_resnet import AttnResNet
    model = AttnResNet(
        depth=50, attention=dict(type='LKA'),
        attention_position='after_conv2').eval()
    assert model.attention_summary() == {'LargeKernelAttention': 16}
    # after_conv2 of a bottleneck: the block's width, 64 ... 512
    assert [getattr(model, f'layer{i}')[0].lka.in_channels
            for i in range(1, 5)] == [64, 128, 256, 512]
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [256, 512, 1024, 2048]
    assert all(torch.isfinite(o).all() for o in outs)


def test_without_mmcv_import_works_and_van_says_what_to_install():
    code = textwrap.dedent('''
        import sys
        sys.modules['mmcv'] = None  # as if it were not installed
        import mmsa
        from mmengine.registry import MODELS
        try:
            MODELS.build(dict(type='VAN'))
        except ImportError as err:
            print(err)
    ''')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert 'VAN needs mmcv, which could not be imported' in out.stdout
