# VAN-B0 as the RetinaNet backbone, COCO 1x; everything else as the
# B2 config (AdamW schedule, SyncBN, no frozen stages).
# Pretrained weights:
#   python tools/model_converters/van2mmsa.py van_tiny_754.pth.tar \
#       pretrained/van_b0_mmsa.pth
_base_ = './retinanet_van-b2_fpn_1x_coco.py'

model = dict(
    backbone=dict(
        arch='b0',
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrained/van_b0_mmsa.pth')),
    neck=dict(in_channels=[32, 64, 160, 256]))
