# RetinaNet with an SA ResNet-18 (half width) on the bundled synthetic data.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    './_base_/demo_coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py'
]
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='AttnResNet',
        depth=18,
        base_channels=32,
        frozen_stages=-1,
        norm_eval=False,
        attention=dict(type='SA', groups=8)),
    neck=dict(in_channels=[32, 64, 128, 256], out_channels=64,
              start_level=1, add_extra_convs='on_input', num_outs=4),
    bbox_head=dict(
        num_classes=3,
        in_channels=64,
        feat_channels=64,
        stacked_convs=2,
        anchor_generator=dict(octave_base_scale=2,
                              strides=[8, 16, 32, 64])),
    test_cfg=dict(nms_pre=300, max_per_img=50))

max_epochs = 6
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0,
         end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[4, 5], gamma=0.1)
]
# AdamW, as the Faster R-CNN demo: from scratch it converges far faster
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
