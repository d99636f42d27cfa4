# UperNet with an SA ResNet-18 (half width, deep stem) on the bundled
# synthetic data in ADE20K layout, evaluated with mIoU.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    './_base_/demo_ade_segmentation.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py'
]
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

crop_size = (160, 160)  # as in the base, which children cannot read
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        type='AttnResNetV1c',
        depth=18,
        stem_channels=32,
        base_channels=32,
        norm_cfg=norm_cfg,
        attention=dict(type='SA', groups=8)),
    decode_head=dict(
        in_channels=[32, 64, 128, 256],
        channels=64,
        pool_scales=(1, 2, 3),
        num_classes=4,
        norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=128, channels=32, num_classes=4, norm_cfg=norm_cfg))

max_iters = 600
# AdamW, as the detection demos: from scratch it converges far faster.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    clip_grad=dict(max_norm=10, norm_type=2))
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
         by_epoch=False)
]
default_hooks = dict(
    logger=dict(interval=20),
    checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
