_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# CBAM (ECCV 2018): channel then spatial gate after bn3; the module's
# defaults are the paper's (r=16, 7x7 spatial conv with BN).
model = dict(
    backbone=dict(
        type='AttnResNet',
        attention=dict(type='CBAM')))
