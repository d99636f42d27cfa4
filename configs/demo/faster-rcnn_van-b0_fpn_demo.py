# The Faster R-CNN demo with a VAN-B0 backbone (Large Kernel Attention),
# trained from scratch on the bundled synthetic data like the SA demo.
_base_ = './faster-rcnn_r18-sa_fpn_demo.py'

model = dict(
    backbone=dict(
        _delete_=True,
        type='VAN',
        arch='b0',  # widths 32, 64, 160, 256
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3)),
    neck=dict(in_channels=[32, 64, 160, 256]))
