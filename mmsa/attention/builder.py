"""Build an attention module from a name or a config dict.

Swapping the attention of a config is mmsa's headline feature, so the
builder accepts the forms a user types on the command line:

- ``attention=ECA`` (``--cfg-options model.backbone.attention=ECA``): the
  type with its paper defaults;
- ``"attention=dict(type='ECA')"`` (mmengine's ``DictAction`` passes it
  as a string) and ``--attention "dict(type='ECA', kernel_size=3)"``: the
  text of a dict, parsed here;
- ``attention.type=ECA`` on a config whose attention was, e.g.,
  ``dict(type='SA', groups=8)``.

The backbones, the neck and VAN build every attention here, under one rule
for its options:

- an option no registered attention takes (a typo) is refused, naming it
  and the options the module takes;
- an option of another attention type, left over by ``attention.type=ECA``
  (SA's ``groups``), is dropped with one warning that says how to replace
  the whole attention;
- a value written in the config is used as written: one that does not fit
  the channels is the module's error;
- only a module's own default adapts to the channels: a default
  ``groups``/``reduction`` that does not fit (SA's ``groups=64`` where a
  stage has 32 channels) becomes the largest value below it with which the
  module builds, with a warning naming the value used;
- one config serves several stages (or neck levels) with
  :func:`split_attention_cfg`: an option the module takes as one value may
  hold one value per stage, e.g. ``dict(type='ECA', kernel_size=(3, 5, 5,
  7))``.
"""
import ast
import inspect
import logging
import warnings
from typing import Dict, List, Optional, Tuple, Union

import torch.nn as nn
from mmengine.logging import print_log

from ..registry import ATTENTIONS

# One attention config: a registered name (``'SA'``), the text of a dict
# (``"dict(type='SA', groups=32)"``), a dict with ``type`` or a class.
AttentionCfg = Union[str, dict, type]

# Options whose default depends on the width the paper used; lowered when
# it does not fit the channels at hand.
ADAPTABLE_DEFAULTS = ('groups', 'reduction')


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


def _parse_dict_string(text: str) -> dict:
    """``"dict(type='ECA', kernel_size=3)"`` or ``"{'type': 'ECA'}"``."""
    try:
        node = ast.parse(text, mode='eval').body
        if isinstance(node, ast.Dict):
            value = ast.literal_eval(node)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
              and node.func.id == 'dict' and not node.args
              and all(k.arg for k in node.keywords)):
            value = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
        else:
            raise ValueError('not a dict')
    except (SyntaxError, ValueError):
        raise TypeError(
            f'attention={text!r} is neither an attention name nor a dict '
            f"with literal values; write e.g. --attention ECA or "
            f"--attention \"dict(type='ECA', kernel_size=3)\"") from None
    if 'type' not in value:
        raise TypeError(f"attention={text!r} has no 'type'; write e.g. "
                        f"--attention \"dict(type='ECA', kernel_size=3)\"")
    return value


def parse_attention_cfg(cfg: AttentionCfg) -> dict:
    """The attention config as a dict with ``type``, from any accepted form.

    Args:
        cfg (str | dict | type): A registered name (``'ECA'``), the text of a
            dict (``"dict(type='ECA', kernel_size=3)"``, as
            ``tools/train.py --attention`` and mmengine's ``--cfg-options``
            pass it), a dict with ``type``, or a class.

    Returns:
        dict: A new dict; ``cfg`` is not modified.
    """
    if inspect.isclass(cfg):
        return dict(type=cfg)
    if isinstance(cfg, str):
        text = cfg.strip()
        if text.startswith(('dict(', '{')):
            return _parse_dict_string(text)
        return dict(type=text)
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise TypeError(f'attention config must be a name or a dict with a '
                        f"'type' key, e.g. dict(type='SA'); got {cfg!r}")
    return dict(cfg)


def _parameters(cls: type) -> Dict[str, inspect.Parameter]:
    params = dict(inspect.signature(cls.__init__).parameters)
    params.pop('self', None)
    return params


def _owners(option: str, but: type) -> List[str]:
    """Registered attention types other than ``but`` that take ``option``."""
    owners = []
    for name, cls in ATTENTIONS.items():
        if cls is but:
            continue
        try:
            params = _parameters(cls)
        except (TypeError, ValueError):  # pragma: no cover - builtins
            continue
        if option in params:
            owners.append(name)
    return sorted(owners)


def _drop_foreign_options(cls: type, name: str, options: dict) -> dict:
    """Drop options that another attention takes (left over by a swap);
    raise on options no attention takes (a typo)."""
    params = _parameters(cls)
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    unknown = [k for k in options if k not in params]
    if not unknown:
        return options
    valid = [p for p in params if p != 'in_channels']
    owners = {k: _owners(k, cls) for k in unknown}
    typos = [k for k in unknown if not owners[k]]
    if typos:
        raise TypeError(
            f'{name}: unknown option(s) {typos}; valid options are {valid}')
    dropped = ', '.join(f'{k}={options[k]!r} (an option of '
                        f'{"/".join(owners[k])})' for k in unknown)
    warnings.warn(
        f'attention {name} does not take {dropped}; ignored. A config '
        f'whose attention type was replaced with attention.type={name} '
        f'keeps the old type\'s options: write attention={name} (or '
        f'"attention=dict(type=\'{name}\', ...)") to replace the whole '
        f'attention. {name} takes {valid}.',
        UserWarning,
        stacklevel=3)
    return {k: v for k, v in options.items() if k not in unknown}


def _resolve(type_: Union[str, type]) -> Tuple[type, str]:
    """The class of ``type_`` and how messages name it."""
    cls = get_attention_class(type_)
    return cls, type_ if isinstance(type_, str) else cls.__name__


def split_attention_cfg(cfg: AttentionCfg,
                        count: int,
                        unit: str = 'stage') -> List[dict]:
    """One attention config per stage (or neck level) from one config.

    An option that the module takes as one value (its default is no list
    or tuple) may hold one value per stage: ``dict(type='ECA',
    kernel_size=(3, 5, 5, 7))`` gives ECA ``kernel_size=3`` in the first
    stage ... 7 in the last. ``init_cfg`` is never split (a module takes a
    list of init configs). Every other option is left as it is, to
    :func:`build_attention`'s rule (an unknown name is reported there too,
    where the module is built).

    Args:
        cfg (str | dict | type): One attention config.
        count (int): The number of stages.
        unit (str): What one entry is for, in messages. Defaults to
            ``'stage'``.

    Returns:
        list[dict]: ``count`` new dicts; ``cfg`` is not modified.

    Raises:
        ValueError: A per-stage value does not have ``count`` entries.
    """
    options = parse_attention_cfg(cfg)
    try:
        cls, name = _resolve(options['type'])
    except UnknownAttentionError:
        return [dict(options) for _ in range(count)]
    params = _parameters(cls)
    per_unit = {
        k: v
        for k, v in options.items()
        if k in params and k != 'init_cfg' and isinstance(v, (list, tuple))
        and not isinstance(params[k].default, (list, tuple))
    }
    for key, values in per_unit.items():
        if len(values) != count:
            raise ValueError(
                f'{name}: {key}={values!r} has {len(values)} values for '
                f'{count} {unit}s; give one {key} for all {unit}s or one '
                f'per {unit}')
    return [
        dict(options, **{k: v[i]
                         for k, v in per_unit.items()})
        for i in range(count)
    ]


def _fit_default(cls: type, in_channels: int,
                 options: dict) -> Optional[Tuple[nn.Module, str, int]]:
    """The module with the largest value below a default that does not
    fit, the option and its default; None when no default the config
    leaves unset can be lowered to fit."""
    params = _parameters(cls)
    for option in ADAPTABLE_DEFAULTS:
        param = params.get(option)
        if (option in options or param is None
                or not isinstance(param.default, int)):
            continue
        for value in range(param.default - 1, 0, -1):
            try:
                module = cls(in_channels=in_channels,
                             **{option: value}, **options)
            except ValueError:
                continue
            return module, option, param.default
    return None


def build_attention(cfg: AttentionCfg,
                    in_channels: int,
                    adapt_defaults: bool = True,
                    where: Optional[str] = None,
                    **overrides) -> nn.Module:
    """Build an attention module for ``in_channels`` channels.

    Args:
        cfg (str | dict | type): A registered name (``'SA'``), the text of
            a dict (``"dict(type='SA', groups=32)"``) or a dict with
            ``type`` and the module's options (``dict(type='SA',
            groups=32)``). The module docstring gives the rule for its
            options.
        in_channels (int): Channels of the tensor the module will gate.
        adapt_defaults (bool): Lower a default ``groups``/``reduction``
            that does not fit ``in_channels``, with a warning. False: raise
            the module's error instead. Defaults to True.
        where (str, optional): Where the module sits, e.g. ``'AttnNeck
            level 0 (96 channels)'``; starts the warning of an adapted
            default. Defaults to None.
        **overrides: Options that take precedence over ``cfg``.

    Returns:
        nn.Module: The module; it returns a tensor of its input's shape.

    Raises:
        UnknownAttentionError: The name is unknown (a ``KeyError``); the
            message lists the available ones.
        TypeError: An option is accepted by no attention module.
        ValueError: An option value is invalid for ``in_channels``.
    """
    options = parse_attention_cfg(cfg)
    options.update(overrides)
    cls, name = _resolve(options.pop('type'))
    options.pop('in_channels', None)
    options = _drop_foreign_options(cls, name, options)
    try:
        return cls(in_channels=in_channels, **options)
    except ValueError as err:
        fitted = _fit_default(cls, in_channels, options) \
            if adapt_defaults else None
        if fitted is None:
            raise
        module, option, default = fitted
        print_log(
            f'{where + ": " if where else ""}{err}; the default {option}='
            f'{default} does not fit, so it uses {type(module).__name__}('
            f'{module.extra_repr()}); set {option} in the attention config '
            f'to choose another value',
            logger='current',
            level=logging.WARNING)
        return module
