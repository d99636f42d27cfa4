"""What mmsa's backbones and necks share when they build attention."""
import os.path as osp
import traceback
from contextlib import contextmanager
from typing import Iterator

from ..attention.builder import UnknownAttentionError
from ..errors import (ConfigError, ConfigKeyError, ConfigTypeError,
                      MMSAError)

_ATTENTION_PACKAGE = osp.join(
    osp.dirname(osp.dirname(osp.abspath(__file__))), 'attention', '')


def _raised_by_attention_package(err: BaseException) -> bool:
    frames = traceback.extract_tb(err.__traceback__)
    return bool(frames) and osp.abspath(
        frames[-1].filename).startswith(_ATTENTION_PACKAGE)


@contextmanager
def attention_config_errors(where: str) -> Iterator[None]:
    """Report a bad attention config as a :class:`~mmsa.errors.ConfigError`
    that says where the attention sits.

    The attention builder and modules (``mmsa.attention``) check their
    options and raise ``ValueError`` (a value that does not fit, with the
    fix), ``TypeError`` (an option nothing takes) or
    ``UnknownAttentionError`` (a ``KeyError``). Those, raised there, become
    a ``ConfigError`` (keeping the built-in type as a base) prefixed with
    ``where``, e.g.
    ``'layer1.0, after_conv3 (32 channels)'``. An error raised anywhere
    else while a module is built (inside torch, say) is no config check
    and passes unchanged, with its traceback.
    """
    try:
        yield
    except (UnknownAttentionError, TypeError, ValueError) as err:
        if isinstance(err, MMSAError) or \
                not _raised_by_attention_package(err):
            raise
        kind = ConfigKeyError if isinstance(err, KeyError) else \
            ConfigTypeError if isinstance(err, TypeError) else ConfigError
        raise kind(f'{where}: {err}') from err
