_base_ = [
    'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/van-b2.py'
]
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# VAN-B2 as the RetinaNet backbone; COCO 1x with AdamW. Backbone,
# pretrained weights and schedule: _base_/van-b2.py.
model = dict(
    backbone={{_base_.van_b2_backbone}},
    neck=dict(in_channels={{_base_.van_b2_channels}}))
optim_wrapper = {{_base_.coco_1x_adamw_optim_wrapper}}
param_scheduler = {{_base_.coco_1x_adamw_param_scheduler}}
