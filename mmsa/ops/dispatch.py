"""Which path an op takes: the ``impl`` names, ``MMSA_IMPL`` and fallbacks.

Every attention module has an ``impl`` argument validated against the
paths it has (``IMPLS``, e.g. SA: ``auto``, ``triton``, ``cpu``,
``reference``). ``'auto'`` takes the fastest kernel for the input's device;
the environment variable ``MMSA_IMPL`` sets a process-wide default that
applies where the config leaves ``impl='auto'`` (a value written in the
config wins; under ``torch.compile`` it is read when the module is traced).
A path that cannot take an input runs the reference and says
why, once per reason.
"""
import logging
import os
from typing import Sequence, Set

import torch
from mmengine.logging import print_log


__all__ = ['IMPL_NAMES', 'IMPL_ENV', 'check_impl', 'resolve_impl',
           'log_fallback_once']

#: Every path name a module may have: ``'auto'`` (the fastest kernel for the
#: input's device), ``'triton'`` (the Triton kernels: CUDA, or CPU tensors
#: under ``TRITON_INTERPRET=1``), ``'cpu'`` (the C++ kernel) and
#: ``'reference'`` (the PyTorch composition).
IMPL_NAMES = ('auto', 'triton', 'cpu', 'reference')
IMPL_ENV = 'MMSA_IMPL'

_LOGGED: Set[str] = set()


def check_impl(owner: str, impl, choices: Sequence[str]) -> None:
    """Raise ``ValueError`` naming ``owner`` and ``choices`` unless ``impl``
    is one of them."""
    if impl not in choices:
        raise ValueError(f'{owner}: impl={impl!r} is not a path of this '
                         f'module; choose one of {list(choices)}')


def _env_default() -> str:
    value = os.environ.get(IMPL_ENV, 'auto') or 'auto'
    if value not in IMPL_NAMES:
        raise ValueError(f'{IMPL_ENV}={value!r} is not a path name; choose '
                         f'one of {list(IMPL_NAMES)} or unset it')
    return value


# Taken as a constant when torch.compile traces a module (torch 2.1's
# dynamo cannot trace os.environ): set MMSA_IMPL before compiling. The mark
# torch.compiler.assume_constant_result sets, set by hand as torch does for
# its own functions: calling it would import torch._dynamo, and with it
# triton, at `import mmsa`.
_env_default._dynamo_marked_constant = True  # type: ignore[attr-defined]


def resolve_impl(module: torch.nn.Module) -> str:
    """The path ``module`` asks for: its ``impl``, or ``MMSA_IMPL`` where
    that is ``'auto'`` and names a path the module has (a module without
    that path keeps ``'auto'``). A wrong name is one error naming the
    choices."""
    impl = module.impl
    choices = module.IMPLS
    if impl == 'auto':
        default = _env_default()
        return default if default in choices else 'auto'
    if impl not in choices:
        check_impl(type(module).__name__, impl, choices)
    return impl


def log_fallback_once(op: str, reason: str) -> None:
    """Log, once per distinct ``(op, reason)``, that ``op`` runs its
    reference composition and why (a kernel not built, a triton too old,
    an input the kernels do not take)."""
    key = f'{op}: {reason}'
    if key not in _LOGGED:
        _LOGGED.add(key)
        print_log(f'{op}: using the reference path: {reason}',
                  logger='current', level=logging.WARNING)
