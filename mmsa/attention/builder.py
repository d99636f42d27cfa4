"""Build an attention module from a name or a config dict."""
import inspect
from typing import Union

import torch.nn as nn

from ..registry import ATTENTIONS


class UnknownAttentionError(KeyError):
    """An attention name that is not registered."""

    def __str__(self) -> str:
        return str(self.args[0])


def get_attention_class(type_: Union[str, type]) -> type:
    """The class registered under ``type_`` (a class passes through)."""
    if inspect.isclass(type_):
        return type_
    if type_ in ATTENTIONS:
        return ATTENTIONS[type_]
    hint = [k for k in ATTENTIONS if k.lower() == str(type_).lower()]
    did_you_mean = f" Did you mean '{hint[0]}'?" if hint else ''
    raise UnknownAttentionError(
        f'Unknown attention type {type_!r}.{did_you_mean} Available: '
        f'{", ".join(ATTENTIONS)}. Example: attention=dict(type=\'SA\', '
        f'groups=64)')


def _check_options(cls: type, name: str, options: dict) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    valid = [p for p in params if p not in ('self', 'in_channels')]
    unknown = [k for k in options if k not in params]
    if unknown:
        raise TypeError(
            f'{name}: unknown option(s) {unknown}; valid options are '
            f'{valid}')


def build_attention(cfg: Union[str, dict], in_channels: int,
                    **overrides) -> nn.Module:
    """Build an attention module for ``in_channels`` channels.

    Args:
        cfg (str | dict): A registered name (``'SA'``) or a dict with
            ``type`` and the module's options (``dict(type='SA', groups=32)``).
        in_channels (int): Channels of the tensor the module will gate.
        **overrides: Options that take precedence over ``cfg``.

    Returns:
        nn.Module: The module; it returns a tensor of its input's shape.

    Raises:
        UnknownAttentionError: The name is unknown (a ``KeyError``); the
            message lists the available ones.
        TypeError: An option is not accepted by the module.
        ValueError: An option value is invalid for ``in_channels``.
    """
    if isinstance(cfg, str):
        cfg = dict(type=cfg)
    elif not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'attention config must be a name or a dict with a '
                        f"'type' key, e.g. dict(type='SA'); got {cfg!r}")
    options = dict(cfg)
    options.update(overrides)
    type_ = options.pop('type')
    cls = get_attention_class(type_)
    options.pop('in_channels', None)
    _check_options(cls, type_ if isinstance(type_, str) else cls.__name__,
                   options)
    return cls(in_channels=in_channels, **options)
