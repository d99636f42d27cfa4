"""What the ops' dispatchers share: one log line per reason for a fallback."""
import logging
from typing import Set

from mmengine.logging import print_log

__all__ = ['log_fallback_once']

_LOGGED: Set[str] = set()


def log_fallback_once(op: str, reason: str) -> None:
    """Log, once per distinct ``(op, reason)``, that ``op`` runs its
    reference composition and why (a kernel not built, a triton too old,
    an input the kernels do not take)."""
    key = f'{op}: {reason}'
    if key not in _LOGGED:
        _LOGGED.add(key)
        print_log(f'{op}: using the reference path: {reason}',
                  logger='current', level=logging.WARNING)
