# VAN-B3 + UperNet on ADE20K, 160k: VAN-Segmentation's
# upernet_van_b3_512x512_160k_ade20k; everything else as the B2 config.
# Pretrained weights:
#   python tools/model_converters/van2mmsa.py van_large_839.pth.tar \
#       pretrained/van_b3_mmsa.pth
_base_ = './upernet_van-b2_4xb4-160k_ade20k-512x512.py'

model = dict(
    backbone=dict(
        arch='b3',
        drop_path_rate=0.3,  # official B3 setting
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrained/van_b3_mmsa.pth')))
