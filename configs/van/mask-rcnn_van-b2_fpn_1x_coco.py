_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# VAN (Guo et al., 2022) as the Mask R-CNN backbone. Backbone settings follow
# the official downstream code (VAN-Segmentation): SyncBN inside VAN, no
# frozen stages, stochastic depth 0.1 for B2.
# Pretrained weights: convert the official ImageNet checkpoint with
#   python tools/model_converters/van2mmsa.py van_base_828.pth.tar \
#       pretrained/van_b2_mmsa.pth
# Schedule: the official VAN detection configs could not be checked, so
# mmdet's Mask R-CNN 1x (SGD lr 0.02, steps at 8 and 11) is kept unchanged;
# the PVT-style transformer setup the paper compares against trains with
# AdamW lr 1e-4, weight decay 1e-4 over the same 12 epochs.
model = dict(
    backbone=dict(
        _delete_=True,
        type='VAN',
        arch='b2',
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrained/van_b2_mmsa.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))
