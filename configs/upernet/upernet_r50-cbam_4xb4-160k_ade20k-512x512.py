_base_ = 'mmseg::upernet/upernet_r50_4xb4-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)

# CBAM (ECCV 2018): channel then spatial gate after bn3; the module's
# defaults are the paper's (r=16, 7x7 spatial conv with BN).
model = dict(
    backbone=dict(
        type='AttnResNetV1c',
        attention=dict(type='CBAM')))
