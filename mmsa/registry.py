"""The one place that knows about mmengine's, mmdet's and mmseg's registries.

Everything mmsa provides is registered in mmengine's *root* ``MODELS``.
mmdet's and mmseg's ``MODELS`` are children of it, so a config built under
either default scope (``default_scope='mmdet'`` / ``'mmseg'``) finds our types
through the parent fallback, and mmcv's ``build_plugin_layer`` finds the
attention modules for stock ``ResNet(plugins=...)``.
"""
import importlib.util
from typing import Callable, Dict, Optional, Type

from mmengine.registry import MODELS

__all__ = [
    'MODELS', 'ATTENTIONS', 'register_attention', 'framework_available',
    'register_unavailable', 'build_model'
]

# name -> class, in registration order; the names users may write in
# ``attention=dict(type=...)`` and the list shown when a name is unknown.
ATTENTIONS: Dict[str, type] = {}


def register_attention(name: Optional[str] = None) -> Callable[[type], type]:
    """Register an attention class in ``MODELS`` and in :data:`ATTENTIONS`."""

    def wrap(cls: type) -> type:
        key = name or cls.__name__
        MODELS.register_module(name=key, module=cls)
        ATTENTIONS[key] = cls
        return cls

    return wrap


def framework_available(package: str) -> bool:
    """Whether ``package`` (``'mmdet'``/``'mmseg'``) can be imported."""
    return importlib.util.find_spec(package) is not None


def register_unavailable(name: str, package: str, extra: str,
                         reason: str = '', attention: bool = False) -> Type:
    """Register ``name`` as a type that explains why it cannot be built.

    Lets ``import mmsa`` succeed with only one of mmdet/mmseg installed while
    a config that asks for the other framework's part fails with a message
    that says what to install, instead of "``name`` is not in the registry".
    """
    why = f' ({reason})' if reason else ''

    def __init__(self, *args, **kwargs):
        raise ImportError(
            f'{name} needs {package}, which could not be imported{why}. '
            f"Install it with: pip install 'mmsa[{extra}]' "
            f'(or tools/setup_env.sh for the pinned stack).')

    cls = type(name, (), {'__init__': __init__, '__doc__':
                          f'Placeholder: {package} is not installed.'})
    MODELS.register_module(name=name, module=cls, force=True)
    if attention:
        ATTENTIONS[name] = cls
    return cls


def build_model(cfg: dict):
    """Build ``cfg`` from ``MODELS`` under the current default scope.

    A type the current scope does not know (``FPN`` outside a runner, or
    under the ``mmengine`` scope) is looked up as ``mmdet.FPN`` /
    ``mmseg.FPN`` too.
    """
    from mmengine.registry import DefaultScope
    type_ = cfg['type']
    if isinstance(type_, str) and '.' not in type_:
        current = DefaultScope.get_current_instance()
        scope = current.scope_name if current is not None else None
        with MODELS.switch_scope_and_registry(scope) as registry:
            known = registry.get(type_) is not None
        if not known:
            for framework in ('mmdet', 'mmseg'):
                if framework_available(framework) and \
                        MODELS.get(f'{framework}.{type_}') is not None:
                    return MODELS.build(dict(cfg,
                                             type=f'{framework}.{type_}'))
    return MODELS.build(cfg)
