"""Suite-wide set-up.

Triton's interpreter runs mmsa's Triton kernels on CPU tensors. It must be
chosen before the kernel modules are imported (``triton.jit`` decides at
decoration time), so it is set here, before any test imports mmsa. The
CPU paths are unaffected: only ``impl='triton'`` sends CPU tensors to the
kernels.
"""
import os

os.environ.setdefault('TRITON_INTERPRET', '1')
