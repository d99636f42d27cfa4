_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# SA-Net (ICASSP 2021): Shuffle Attention after bn3 of every bottleneck;
# the module's defaults are the official ones (G=64).
model = dict(
    backbone=dict(
        type='AttnResNet',
        attention=dict(type='SA')))
