"""Swap the attention of any config with one key: ``--attention NAME``.

Where the attention lives depends on the config: ``model.backbone.attention``
for mmsa's ResNets and VAN (LKA is VAN's default gating unit),
``model.neck.attention`` for the configs that put it on the neck outputs
(``AttnNeck``). :func:`attention_key` finds it, so a user need not know.
"""
import inspect
import warnings
from typing import Optional, Union

from mmengine.config import Config
from mmengine.registry import MODELS

from ..attention.builder import parse_attention_cfg
from ..errors import ConfigKeyError

# Where the removed attention went: without it they would place nothing,
# which the backbones refuse.
PLACEMENT_KEYS = ('attention_stages', 'attention_position',
                  'attention_blocks')


def _takes_attention(type_) -> bool:
    """Whether the registered class ``type_`` has an ``attention`` arg."""
    cls = MODELS.get(type_) if isinstance(type_, str) else type_
    if cls is None or not inspect.isclass(cls):
        return False
    return 'attention' in inspect.signature(cls.__init__).parameters


def attention_key(cfg: Config) -> str:
    """The dotted key of a config's attention, e.g.
    ``'model.backbone.attention'``.

    Raises:
        ConfigKeyError: The config's model has no part that takes
            ``attention`` (a ``KeyError``).
    """
    model = cfg.get('model') or {}
    for part in ('backbone', 'neck'):
        sub = model.get(part)
        if isinstance(sub, dict) and ('attention' in sub
                                      or _takes_attention(sub.get('type'))):
            return f'model.{part}.attention'
    backbone = (model.get('backbone') or {}).get('type')
    raise ConfigKeyError(
        f'this config has no attention to swap: its backbone '
        f'{backbone!r} and neck take no `attention`. Use mmsa\'s backbone '
        f"(model.backbone.type='AttnResNet' for mmdet, 'AttnResNetV1c' for "
        f"mmseg's UperNet) or wrap the neck with type='AttnNeck'")


def swap_attention(cfg: Config, attention: Optional[Union[str, dict]]
                   ) -> str:
    """Replace the whole attention of ``cfg`` in place.

    The new type gets its paper defaults; options of the old type do not
    carry over. ``None`` (or ``'None'``) removes the attention, and the
    options that placed it (``attention_stages`` ...), with a warning.

    Args:
        cfg (Config): A loaded config.
        attention (str | dict | None): ``'ECA'``,
            ``"dict(type='ECA', kernel_size=3)"``, a dict, or None.

    Returns:
        str: The key that was set, e.g. ``'model.backbone.attention'``.
    """
    key = attention_key(cfg)
    if attention is None or (isinstance(attention, str)
                             and attention.strip().lower() == 'none'):
        value = None
    else:
        value = parse_attention_cfg(attention)
    part = cfg.model[key.split('.')[1]]
    part['attention'] = value
    placed = {k: part[k] for k in PLACEMENT_KEYS
              if value is None and part.get(k) is not None}
    if placed:
        for name in placed:
            part[name] = None
        warnings.warn(
            f'--attention None: also removed '
            f'{", ".join(f"{k}={v!r}" for k, v in placed.items())}, which '
            f'placed the removed attention', UserWarning, stacklevel=2)
    return key
