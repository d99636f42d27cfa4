"""The one place that knows about mmengine's, mmdet's and mmseg's registries.

Everything mmsa provides is registered in mmengine's *root* ``MODELS``.
mmdet's and mmseg's ``MODELS`` are children of it, so a config built under
either default scope (``default_scope='mmdet'`` / ``'mmseg'``) finds our types
through the parent fallback, and mmcv's ``build_plugin_layer`` finds the
attention modules for stock ``ResNet(plugins=...)``.
"""
import difflib
import functools
import importlib.util
from typing import Callable, Dict, Optional, Type

from mmengine.registry import MODELS, Registry

__all__ = [
    'MODELS', 'ATTENTIONS', 'register_attention', 'framework_available',
    'register_unavailable', 'build_model', 'UnknownTypeError',
    'add_type_hints'
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


class UnknownTypeError(KeyError):
    """A ``type`` no registry in scope knows; the message lists mmsa's
    attentions and the nearest registered name."""

    def __str__(self) -> str:
        return str(self.args[0])


def _hint(type_: str, registry: Registry) -> str:
    names = list(ATTENTIONS)
    # the registry of the default scope (mmdet's under a runner) and its
    # parents: every name the failed lookup could have found
    with registry.switch_scope_and_registry(None) as scoped:
        while scoped is not None:
            names += [n for n in scoped.module_dict if n not in names]
            scoped = scoped.parent
    near = [n for n in names if n.lower() == type_.lower()] or \
        difflib.get_close_matches(type_, names, n=1)
    did_you_mean = f" Did you mean '{near[0]}'?" if near else ''
    return (f'{did_you_mean} Attention types (mmsa): {", ".join(ATTENTIONS)}'
            f", e.g. dict(type='SA', groups=64); a type from another "
            f'package needs it imported first (custom_imports).')


def _with_type_hints(build_func: Callable) -> Callable:

    @functools.wraps(build_func)
    def build(cfg, *args, **kwargs):
        try:
            return build_func(cfg, *args, **kwargs)
        except KeyError as err:
            type_ = cfg.get('type') if isinstance(cfg, dict) else None
            message = str(err.args[0]) if err.args else ''
            # only "this very type is unknown": a KeyError from inside a
            # constructor, or about a nested type, passes unchanged
            if isinstance(err, UnknownTypeError) or not isinstance(
                    type_, str) or not message.startswith(
                        f'{type_} is not in the '):
                raise
            registry = kwargs.get('registry', args[0] if args else MODELS)
            first = message.split('. ')[0]
            raise UnknownTypeError(
                f'{first}.{_hint(type_, registry)}') from None

    build._mmsa_type_hints = True
    return build


def add_type_hints(registry: Registry = MODELS) -> None:
    """Make ``registry.build`` (and its children's) explain an unknown type.

    mmengine's own message names neither the choices nor a near miss. The
    children (mmdet's, mmseg's ``MODELS``) copied the root's build function
    when they were created, so each is wrapped too; registries created later
    inherit the wrapped one.
    """
    if not getattr(registry.build_func, '_mmsa_type_hints', False):
        registry.build_func = _with_type_hints(registry.build_func)
    for child in registry.children.values():
        add_type_hints(child)
