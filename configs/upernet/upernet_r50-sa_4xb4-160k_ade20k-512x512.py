_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# SA-Net (ICASSP 2021): Shuffle Attention after bn3 of every bottleneck;
# the module's defaults are the official ones (G=64).
model = dict(
    backbone=dict(
        type='AttnResNetV1c',
        attention=dict(type='SA')))
