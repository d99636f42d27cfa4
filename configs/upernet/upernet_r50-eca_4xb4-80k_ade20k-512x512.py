_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# ECA-Net (CVPR 2020): one kernel size per stage, k=3,5,5,7 as in the
# released ImageNet ECA-R50 (the paper's rule would give 5,5,5,7); the
# backbone gives each stage its entry.
model = dict(
    backbone=dict(
        type='AttnResNetV1c',
        attention=dict(type='ECA', kernel_size=(3, 5, 5, 7))))
