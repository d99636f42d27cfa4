"""Suite-wide set-up.

Triton's interpreter runs mmsa's Triton kernels on CPU tensors. It must be
chosen before the kernel modules are imported (``triton.jit`` decides at
decoration time), so it is set here, before any test imports mmsa. The
CPU paths are unaffected: only ``impl='triton'`` sends CPU tensors to the
kernels.

On a GPU (the tests marked ``cuda``) convolutions and matmuls run in full
float32, not TF32: the kernels' float32 results are compared with float64
references to 1e-5, which TF32's 10-bit mantissa in an attention's own
convolution (ECA's, CBAM's) would miss.
"""
import os

import pytest
import torch

os.environ.setdefault('TRITON_INTERPRET', '1')


@pytest.fixture(autouse=True)
def full_float32():
    saved = (torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    (torch.backends.cudnn.allow_tf32,
     torch.backends.cuda.matmul.allow_tf32) = saved
