"""visualize_attention: which blocks it draws and where labels go."""
import matplotlib
import numpy as np
import pytest
import torch
from testing_utils import load_tool, randomize_

pytest.importorskip('mmdet')

from mmsa.models.backbones.det_resnet import AttnResNet  # noqa: E402

matplotlib.use('Agg')
vis = load_tool('tools/analysis_tools/visualize_attention.py')


def _sa_r18() -> AttnResNet:
    return AttnResNet(depth=18, base_channels=32,
                      attention=dict(type='SA', groups=8)).eval()


def test_default_blocks_are_the_last_sa_block_of_each_stage():
    found = vis.find_sa(_sa_r18())
    assert [name for name, _ in found] == [
        'layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']
    chosen = vis.find_sa(_sa_r18(), ['layer3.0'])
    assert [name for name, _ in chosen] == ['layer3.0']
    with pytest.raises(ValueError, match='--blocks layer9.0: no SA module'):
        vis.find_sa(_sa_r18(), ['layer9.0'])


def test_labels_of_boxes_at_one_place_do_not_overlap():
    shape = (200, 300)
    taken = []
    for _ in range(3):
        rect = vis.place_label((50, 60, 120, 150), (60, 14), taken, shape)
        assert all(vis._overlap(rect, t) == 0 for t in taken)
        assert 0 <= rect[1] and rect[3] <= shape[0]
        taken.append(rect)


def test_attention_figure_has_a_map_and_sorted_bars_per_block():
    model = randomize_(_sa_r18(), seed=3)
    blocks = vis.find_sa(model)
    captured = {}
    for name, sa in blocks:
        sa.register_forward_hook(
            lambda m, inputs, out, name=name: captured.update(
                {name: inputs[0]}))
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3),
                                              dtype=np.uint8)
    with torch.no_grad():
        model(torch.from_numpy(image).permute(2, 0, 1)[None].float())
    maps = []
    for name, sa in blocks:
        channel, spatial = vis.gates(sa, captured[name])
        assert channel.shape == (sa.in_channels // 2, )
        assert spatial.shape == captured[name].shape[-2:]
        maps.append((name, sa.groups, spatial.shape, channel, spatial))
    fig = vis.draw_attention(image, maps, 'test')
    bars = fig.axes[len(maps)]  # row 2, column 1: channel weights
    heights = [p.get_height() for p in bars.patches]
    assert heights == sorted(heights, reverse=True)
    image_axes = [ax for ax in fig.axes if ax.images]
    assert len(image_axes) == len(maps)
    for ax, (_, _, _, _, spatial) in zip(image_axes, maps):
        # coloured over this map's own range, not 0-1
        low, high = ax.images[1].get_clim()  # the gate over the image
        assert spatial.min() - 1e-6 <= low < high <= spatial.max() + 1e-6
        assert high - low > 0.5 * (spatial.max() - spatial.min())
