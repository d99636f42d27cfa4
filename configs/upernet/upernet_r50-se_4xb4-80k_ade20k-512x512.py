_base_ = 'mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# SENet (CVPR 2018): SE after bn3 of every bottleneck; the module's
# defaults are the paper's (r=16, with biases).
model = dict(
    backbone=dict(
        type='AttnResNetV1c',
        attention=dict(type='SE')))
