# VAN-B0 + UperNet on ADE20K, 160k: VAN-Segmentation's
# upernet_van_b0_512x512_160k_ade20k; everything else as the B2 config.
# Pretrained weights:
#   python tools/model_converters/van2mmsa.py van_tiny_754.pth.tar \
#       pretrained/van_b0_mmsa.pth
_base_ = './upernet_van-b2_4xb4-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b0',
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrained/van_b0_mmsa.pth')),
    decode_head=dict(in_channels=[32, 64, 160, 256]),
    auxiliary_head=dict(in_channels=160))
