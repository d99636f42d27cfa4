"""mmsa's Triton kernels through Triton's real compiler, without a GPU.

The interpreter (test_block_end.py) runs the kernels' Python; here
the compiler checks what only the GPU path sees (types, layouts, constexpr
branches), in a process without the interpreter: Triton 3 builds sm_90
binaries (TTIR -> PTX -> ptxas, the H100/H200); Triton 2.1, which torch 2.1
ships and whose interpreter cannot run CPU tensors, lowers every kernel
variant to TTIR.
"""
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip('triton')

KERNELS = r'''
import itertools
import sys
import triton
import mmsa.ops.block_end_triton as be
import mmsa.ops.triton_gate as gate

INTS = ('C', 'P', 'G')
TENSORS = ('X', 'Y', 'R', 'GY', 'DX', 'DR', 'Z', 'DZ')


def signature(kernel, dtype, constants):
    sig = {}
    for name in kernel.arg_names:
        if name in constants:
            sig[name] = 'constexpr'
        elif name in TENSORS:
            sig[name] = '*' + dtype
        elif name.isupper() and name not in INTS:
            sig[name] = '*fp32'
        else:
            sig[name] = 'fp32' if name == 'eps' else 'i32'
    return sig


try:  # Triton 3: ahead-of-time compile for a target
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def build(kernel, dtype, **constants):
        constexprs = {(kernel.arg_names.index(k), ): v
                      for k, v in constants.items()}
        triton.compile(ASTSource(fn=kernel,
                                 signature=signature(kernel, dtype,
                                                     constants),
                                 constexprs=constexprs),
                       target=GPUTarget('cuda', 90, 32))
except ImportError:  # Triton 2.1: the front end, to TTIR
    from triton.compiler.code_generator import ast_to_ttir
    from triton.compiler.compiler import instance_descriptor

    def build(kernel, dtype, **constants):
        sig = signature(kernel, dtype, constants)
        sig = {kernel.arg_names.index(k): v for k, v in sig.items()
               if v != 'constexpr'}
        ast_to_ttir(kernel, sig, instance_descriptor(), constants,
                    debug=False, arch=80)

flags = (False, True)
# (SHUFFLE, HAS_A, HAS_P, the residual / ReLU flag, WIDE): every branch of
# each kernel, pairwise
VARIANTS = [(1, False, False, False, False), (2, True, True, True, False),
            (1, True, False, True, True), (2, False, True, False, True)]
for dtype in ('fp32', 'fp16', 'bf16'):
    for final, wide in itertools.product(flags, flags):
        build(be._moments_kernel, dtype, FINAL=final, WIDE=wide, BLOCK_C=64,
              BLOCK_P=32)
    for shuffle, has_a, has_p, on, wide in VARIANTS:
        common = dict(SHUFFLE=shuffle, HAS_A=has_a, HAS_P=has_p, WIDE=wide)
        build(be._apply_kernel, dtype, HAS_RESIDUAL=on, BLOCK_C=1,
              BLOCK_P=1024, **common)
        build(be._sums_kernel, dtype, HAS_RELU=on, BLOCK_C=1, BLOCK_P=2048,
              **common)
        build(be._dz_kernel, dtype, HAS_RELU=on, WRITE_DR=on, BLOCK_C=64,
              BLOCK_P=16, **common)
    for gc, gs, on in itertools.product(flags, flags, flags):
        if not (gc or gs):
            continue
        build(gate._gate_forward_kernel, dtype, HAS_GC=gc, HAS_GS=gs,
              HAS_RESIDUAL=on, BLOCK_C=2, BLOCK_P=1024, WIDE=on)
        build(gate._gate_backward_kernel, dtype, HAS_GC=gc, HAS_GS=gs,
              HAS_RELU=on, WRITE_DR=on, BLOCK_C=8, BLOCK_P=256, WIDE=gs)
build(be._merge_moments_kernel, 'fp32', BLOCK_R=64, SPLITS_P2=4)
print('compiled', triton.__version__)
'''


def test_triton_kernels_compile_without_a_gpu():
    """Every kernel variant (each dtype, each constexpr branch the
    dispatchers use) passes Triton's compiler: sm_90 binaries with Triton
    3, TTIR with Triton 2.1."""
    env = dict(os.environ, TRITON_INTERPRET='0')
    done = subprocess.run([sys.executable, '-c', KERNELS], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f'compiled {triton.__version__}' in done.stdout
