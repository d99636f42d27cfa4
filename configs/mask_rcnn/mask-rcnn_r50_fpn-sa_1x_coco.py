_base_ = 'mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# Shuffle Attention (default G=64) on every FPN output level of a plain
# ResNet-50 Faster/Mask R-CNN or RetinaNet.
model = dict(
    neck=dict(
        _delete_=True,
        type='AttnNeck',
        neck={{_base_.model.neck}},
        attention=dict(type='SA')))
