_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# VAN-B2 + UperNet on ADE20K, 160k iterations, as VAN-Segmentation's
# upernet_van_b2_512x512_160k_ade20k (50.1 mIoU multi-scale, reported).
# Official batch 8 GPUs x 2 images; here 4 x 4, the same 16 in total.
# Pretrained weights: convert the official ImageNet checkpoint with
#   python tools/model_converters/van2mmsa.py van_base_828.pth.tar \
#       pretrained/van_b2_mmsa.pth
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='VAN',
        arch='b2',
        drop_rate=0.,
        drop_path_rate=0.1,
        out_indices=(0, 1, 2, 3),
        norm_cfg=norm_cfg,
        init_cfg=dict(
            type='Pretrained', checkpoint='pretrained/van_b2_mmsa.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
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
