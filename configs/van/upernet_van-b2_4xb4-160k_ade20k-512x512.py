_base_ = [
    'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py',
    './_base_/van-b2.py'
]
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# VAN-B2 + UperNet on ADE20K, 160k iterations, as VAN-Segmentation's
# upernet_van_b2_512x512_160k_ade20k (50.1 mIoU multi-scale, reported).
# Official batch 8 GPUs x 2 images; here 4 x 4, the same 16 in total.
# Backbone and pretrained weights: _base_/van-b2.py.
model = dict(
    pretrained=None,
    backbone={{_base_.van_b2_seg_backbone}},
    decode_head=dict(in_channels={{_base_.van_b2_channels}}),
    auxiliary_head=dict(in_channels=320))

# AdamW, no weight decay on the norms; linear warm-up for 1500 iterations,
# then poly decay with power 1 to 0 (the official lr_config).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=0.00006, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0,
        end=1500),
    dict(
        type='PolyLR',
        power=1.0,
        eta_min=0.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]
