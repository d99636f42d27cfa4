_base_ = 'mmdet::faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# GCNet (ICCVW 2019): GC block with r=16 in stages c3-c5, as mmdet's
# gcnet r16 configs.
model = dict(
    backbone=dict(
        type='AttnResNet',
        attention=dict(type='GC', ratio=1. / 16),
        attention_stages=(False, True, True, True)))
