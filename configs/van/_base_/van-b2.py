# VAN-B2 (Guo et al., 2022) as a detection or segmentation backbone, set as
# in the official downstream code (VAN-Segmentation): SyncBN inside VAN, no
# frozen stages, stochastic depth 0.1. The configs in configs/van/ inherit
# these variables and use them with {{_base_.NAME}}; the backbone replaces
# the base config's ResNet whole (_delete_).
# Pretrained weights: convert the official ImageNet checkpoint with
#   python tools/model_converters/van2mmsa.py van_base_828.pth.tar \
#       pretrained/van_b2_mmsa.pth
van_b2_backbone = dict(
    _delete_=True,
    type='VAN',
    arch='b2',
    drop_path_rate=0.1,
    out_indices=(0, 1, 2, 3),
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    init_cfg=dict(type='Pretrained', checkpoint='pretrained/van_b2_mmsa.pth'))
# VAN-Segmentation's UperNet config also states the dropout rate (VAN's
# default).
van_b2_seg_backbone = dict(van_b2_backbone, drop_rate=0.)
# The channels of the four stages' outputs.
van_b2_channels = [64, 128, 320, 512]

# COCO 1x (12 epochs, steps at 8 and 11, 16 images per iteration) with
# AdamW lr 1e-4, weight decay 0.05 and a 1000-iteration warm-up, the setting
# of the VAN detection configs published with LSKA (Lau et al., 2023, which
# trains the VAN backbone in mmdetection); no detection config from the VAN
# authors could be found. mmdet's SGD recipe is tuned for BN ResNets.
coco_1x_adamw_optim_wrapper = dict(
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))
coco_1x_adamw_param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=12,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
