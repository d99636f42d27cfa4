"""Every attention module and the attention backbones, built with their
defaults, export to ONNX the way mmdeploy exports them (``torch.onnx.export``,
TorchScript tracing) and onnxruntime reproduces their outputs."""
import importlib.util
import inspect
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest
import torch
import torch.nn as nn
from testing_utils import randomize_

from mmsa.attention import ATTENTIONS, build_attention

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

# mmdeploy's default opset for mmdet/mmseg models.
OPSET = 11
# Relative to the output's scale: ONNX Runtime's kernels sum in another
# order than torch's.
RTOL = 1e-4


def _exporter_kwargs() -> dict:
    # torch >= 2.5 has a second (dynamo) exporter, the default from 2.9;
    # mmdeploy uses the TorchScript one, which dynamo=False selects.
    params = inspect.signature(torch.onnx.export).parameters
    return dict(dynamo=False) if 'dynamo' in params else {}


def _outputs(out) -> Sequence[torch.Tensor]:
    return tuple(out) if isinstance(out, (tuple, list)) else (out, )


def _export_and_compare(model: nn.Module, shape: Sequence[int],
                        path: Path) -> None:
    """Export with one input and run another: a part the tracer cannot see
    (a custom kernel) would be frozen into the graph as a constant."""
    model.eval()
    x = _input(shape, seed=1)
    with torch.no_grad():
        expected = _outputs(model(x))
    names = [f'out{i}' for i in range(len(expected))]
    with torch.no_grad():
        torch.onnx.export(model, (_input(shape, seed=0), ),
                          str(path),
                          input_names=['input'],
                          output_names=names,
                          opset_version=OPSET,
                          **_exporter_kwargs())
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path),
                                   providers=['CPUExecutionProvider'])
    actual = session.run(names, {'input': x.numpy()})
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected):
        want = want.numpy()
        assert got.shape == want.shape
        diff = float(np.abs(got - want).max())
        scale = float(np.abs(want).max())
        assert diff <= RTOL * scale, \
            f'max abs diff {diff:.3g} > {RTOL:g} * output scale {scale:.3g}'


def _input(shape: Sequence[int], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize('name', list(ATTENTIONS))
def test_attention_exports_to_onnx_and_matches_onnxruntime(tmp_path, name):
    if not hasattr(ATTENTIONS[name], 'forward'):  # placeholder, no mmcv
        pytest.skip(f'{name} needs mmcv, which is not installed')
    # 256 channels fit every module's defaults (SA's 64 groups need 128k)
    module = randomize_(build_attention(dict(type=name), in_channels=256))
    _export_and_compare(module, (2, 256, 12, 10), tmp_path / f'{name}.onnx')


def test_sa_kernel_steps_aside_while_exporting(tmp_path):
    """The default SA (impl='auto') traces to standard ONNX ops only."""
    module = randomize_(build_attention('SA', in_channels=256))
    path = tmp_path / 'sa.onnx'
    _export_and_compare(module, (1, 256, 6, 5), path)
    domains = {node.domain for node in onnx.load(str(path)).graph.node}
    assert domains <= {'', 'ai.onnx'}, domains


def _with_random_attention(model: nn.Module) -> nn.Module:
    """The backbone's own initialisation, its attention modules randomised
    (SA's zero init would make half of its math vanish); random weights
    everywhere would overflow float32 through 50 layers."""
    model.init_weights()
    classes = tuple(c for c in ATTENTIONS.values() if hasattr(c, 'forward'))
    for module in model.modules():
        if isinstance(module, classes):
            randomize_(module)
    return model


def _needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f'{package} is not installed')


def test_attn_resnet_with_sa_exports_to_onnx(tmp_path):
    _needs('mmdet')
    from mmsa.models.backbones.det_resnet import AttnResNet
    model = _with_random_attention(
        AttnResNet(depth=50, attention=dict(type='SA')))
    _export_and_compare(model, (1, 3, 64, 64), tmp_path / 'attn_resnet.onnx')


def test_attn_resnet_v1c_with_sa_exports_to_onnx(tmp_path):
    _needs('mmseg')
    from mmsa.models.backbones.seg_resnet import AttnResNetV1c
    model = _with_random_attention(
        AttnResNetV1c(depth=50, attention=dict(type='SA')))
    _export_and_compare(model, (1, 3, 64, 64),
                        tmp_path / 'attn_resnet_v1c.onnx')


def test_van_exports_to_onnx(tmp_path):
    _needs('mmcv')
    from mmsa.models import VAN
    model = _with_random_attention(VAN())
    _export_and_compare(model, (1, 3, 64, 64), tmp_path / 'van.onnx')
