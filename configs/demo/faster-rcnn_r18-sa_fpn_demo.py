# `make demo`: an SA ResNet-18 (half width) Faster R-CNN trained from scratch
# on the bundled synthetic data, on 2 CPU cores (about 11 minutes on the
# 2-core build machine; README gives the measured runs).
_base_ = [
    'mmdet::_base_/models/faster-rcnn_r50_fpn.py',
    './_base_/demo_coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

widths = [32, 64, 128, 256]
model = dict(
    backbone=dict(
        _delete_=True,
        type='AttnResNet',
        depth=18,
        base_channels=32,
        frozen_stages=-1,
        norm_eval=False,
        attention=dict(type='SA', groups=8)),  # 32 channels: k = 32/16 = 2
    # FPN from stride 8: objects are 14-72 px, the stride-4 level would
    # double the cost for nothing.
    neck=dict(in_channels=widths, out_channels=64, start_level=1,
              num_outs=4),
    rpn_head=dict(
        in_channels=64,
        feat_channels=64,
        anchor_generator=dict(scales=[2], strides=[8, 16, 32, 64])),
    roi_head=dict(
        bbox_roi_extractor=dict(
            out_channels=64, featmap_strides=[8, 16, 32, 64]),
        bbox_head=dict(in_channels=64, fc_out_channels=256, num_classes=3)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=1000, max_per_img=500),
        rcnn=dict(sampler=dict(num=128))),
    test_cfg=dict(
        rpn=dict(nms_pre=500, max_per_img=300),
        rcnn=dict(max_per_img=50)))

# From scratch on 400 images: AdamW converges far faster than the COCO SGD
# recipe within the demo's 800 iterations.
max_epochs = 8
train_cfg = dict(max_epochs=max_epochs, val_interval=2)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[6, 7], gamma=0.1)
]
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=4)
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
# per-epoch reseeding: a --resume'd run ends identical to an uninterrupted one
custom_hooks = [dict(type='EpochSeedHook', seed=0)]
