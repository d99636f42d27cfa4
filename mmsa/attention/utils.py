"""Construction-time validation shared by the attention modules.

Errors name the module, the offending value and a valid alternative, so a bad
config fails when the model is built, never with a raw reshape error later.
"""
import math
from typing import List, Sequence


def module_repr(module: str, **values) -> str:
    args = ', '.join(f'{k}={v!r}' for k, v in values.items())
    return f'{module}({args})'


def suggest_groups(n: int, wanted: int) -> List[int]:
    """Valid group counts for ``n`` channels near ``wanted``.

    The nearest divisors of ``n`` below and above ``wanted``; when none is
    above, the largest power-of-two divisor below instead.
    """
    divisors = [d for d in range(1, n + 1) if n % d == 0]
    below = max(d for d in divisors if d <= wanted)
    above = [d for d in divisors if d > wanted]
    other = min(above) if above else max(
        d for d in divisors if d <= wanted and d & (d - 1) == 0)
    return sorted({below, other})


def check_positive_int(module: str, name: str, value, **ctx) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f'{module_repr(module, **ctx)}: {name} must be a '
                         f'positive int, got {value!r}')


def check_groups(module: str, in_channels: int, groups: int,
                 factor: int = 1, **ctx) -> None:
    """Require ``in_channels % (factor * groups) == 0``.

    The suggestion lists the group counts nearest to the requested one that
    do divide ``in_channels / factor``.
    """
    check_positive_int(module, 'in_channels', in_channels,
                       in_channels=in_channels, groups=groups, **ctx)
    check_positive_int(module, 'groups', groups, in_channels=in_channels,
                       groups=groups, **ctx)
    if in_channels % (factor * groups) == 0:
        return
    what = 'groups' if factor == 1 else f'{factor}*groups={factor * groups}'
    if in_channels % factor:
        fix = f'in_channels must be a multiple of {factor}'
    else:
        options = suggest_groups(in_channels // factor, groups)
        fix = 'try groups=' + ' or '.join(str(o) for o in options)
    raise ValueError(
        f'{module_repr(module, in_channels=in_channels, groups=groups, **ctx)}'
        f': in_channels must be divisible by {what}; {fix}')


def check_reduction(module: str, in_channels: int, reduction: int,
                    **ctx) -> None:
    """Require ``1 <= reduction <= in_channels`` (hidden width >= 1)."""
    values = dict(in_channels=in_channels, reduction=reduction, **ctx)
    check_positive_int(module, 'in_channels', in_channels, **values)
    check_positive_int(module, 'reduction', reduction, **values)
    if reduction > in_channels:
        raise ValueError(
            f'{module_repr(module, **values)}: reduction must not exceed '
            f'in_channels (hidden width would be 0); try '
            f'reduction={min(16, in_channels)}')


def check_odd_kernel(module: str, kernel_size, **ctx) -> None:
    if (isinstance(kernel_size, bool) or not isinstance(kernel_size, int)
            or kernel_size < 1 or kernel_size % 2 == 0):
        alt = (kernel_size + 1 if isinstance(kernel_size, int)
               and not isinstance(kernel_size, bool) and kernel_size > 0
               else 3)
        raise ValueError(
            f'{module_repr(module, kernel_size=kernel_size, **ctx)}: '
            f'kernel_size must be a positive odd int (same padding); '
            f'try kernel_size={alt}')


def check_choice(module: str, name: str, value, choices: Sequence,
                 **ctx) -> None:
    if value not in choices:
        raise ValueError(
            f'{module_repr(module, **{name: value}, **ctx)}: unknown {name} '
            f'{value!r}; choose one of {list(choices)}')


def make_divisible(value: float, divisor: int, min_value: int = 0) -> int:
    """Round ``value`` to a multiple of ``divisor`` without losing >10%.

    The rule timm and mmpretrain use for SE hidden widths.
    """
    min_value = min_value or divisor
    new = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if new < 0.9 * value:
        new += divisor
    return new


def eca_kernel_size(channels: int, gamma: int = 2, b: int = 1) -> int:
    """ECA-Net's adaptive kernel size: nearest odd of |log2(C) + b| / gamma."""
    t = int(abs((math.log2(channels) + b) / gamma))
    return t if t % 2 else t + 1
