_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# SENet (CVPR 2018): SE after bn3 of every bottleneck; the module's
# defaults are the paper's (r=16, with biases).
model = dict(
    backbone=dict(
        type='AttnResNet',
        attention=dict(type='SE')))
