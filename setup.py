"""Packaging for mmsa.

``install_requires`` names only what mmsa imports itself and leaves the
OpenMMLab pins to the extras, so ``pip install -e .`` into an existing
mmdet/mmseg environment (e.g. a CUDA box) does not reinstall torch or mmcv.
The fully pinned CPU stack is installed by ``tools/setup_env.sh``.

The floors below are the oldest versions CI tests (``make test-compat``:
torch 2.1.2, numpy 1.26.4, mmengine 0.10.7 on Python 3.11; the OpenMMLab
stack at mmcv 2.1.0, mmdet 3.3.0, mmsegmentation 1.2.2), nothing lower.

The CPU kernels (``mmsa/ops/csrc``: Shuffle Attention's, and the block end's
for SA, SE and ECA) are built when torch is importable at build time (``pip
install --no-build-isolation``) and a C++ compiler with OpenMP is present;
otherwise, or if the build fails, mmsa installs without them and those
attentions run their reference path on CPU (logged once).
``MMSA_NO_EXT=1`` skips the build.
"""
import os
import os.path as osp
import warnings

from setuptools import find_packages, setup

ROOT = osp.dirname(osp.abspath(__file__))


def read_version() -> str:
    scope: dict = {}
    with open(osp.join(ROOT, 'mmsa', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


def read_requirements(name: str) -> list:
    with open(osp.join(ROOT, 'requirements', name)) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line]


def sa_extension() -> dict:
    """``ext_modules``/``cmdclass`` for the optional CPU kernels."""
    if os.environ.get('MMSA_NO_EXT', '0') == '1':
        return {}
    try:
        from torch.utils.cpp_extension import BuildExtension, CppExtension
    except ImportError:  # isolated build env: no torch, no extension
        return {}

    class OptionalBuildExt(BuildExtension):
        """A failed compile leaves the pure-Python package installable."""

        def build_extension(self, ext) -> None:
            try:
                super().build_extension(ext)
            except Exception as err:  # compiler missing, no OpenMP, ...
                warnings.warn(f'mmsa: CPU kernels not built ({err}); SA, '
                              'SE and ECA will use their reference '
                              'implementation on CPU.')

    ext = CppExtension(
        'mmsa.ops._sa_cpu', ['mmsa/ops/csrc/shuffle_attention.cpp',
                             'mmsa/ops/csrc/block_end_cpu.cpp'],
        extra_compile_args=['-O3', '-fopenmp', '-fno-trapping-math'],
        extra_link_args=['-fopenmp'])
    return dict(ext_modules=[ext], cmdclass={'build_ext': OptionalBuildExt})


MM_CORE = ['mmengine>=0.10.7,<1.0', 'mmcv>=2.1.0,<2.2.0']

setup(
    name='mmsa',
    version=read_version(),
    description='Lightweight attention modules (Shuffle Attention, SE, ECA, '
    'CBAM, ...) for MMDetection 3.x and MMSegmentation 1.x',
    long_description=open(osp.join(ROOT, 'README.md')).read()
    if osp.exists(osp.join(ROOT, 'README.md')) else '',
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    packages=find_packages(exclude=('configs', 'tools', 'tests')),
    python_requires='>=3.11',
    install_requires=['torch>=2.1', 'numpy>=1.26', 'mmengine>=0.10.7,<1.0'],
    extras_require={
        'det': MM_CORE + ['mmdet>=3.3.0,<3.4', 'pycocotools'],
        # mmseg.models imports ftfy and regex without declaring them
        'seg': MM_CORE + ['mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex'],
        'tests': read_requirements('tests.txt') + ['pycocotools'],
        'all': MM_CORE + ['mmdet>=3.3.0,<3.4', 'mmsegmentation>=1.2.2,<1.3',
                          'ftfy', 'regex', 'pycocotools', 'matplotlib'],
    },
    zip_safe=False,
    **sa_extension(),
)
