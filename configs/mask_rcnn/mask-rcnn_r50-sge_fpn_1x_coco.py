_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# SGE (2019): Spatial Group-wise Enhance after bn3; the module's
# default is the paper's G=64.
model = dict(
    backbone=dict(
        type='AttnResNet',
        attention=dict(type='SGE')))
