"""Build a config's model before the runner, so its errors come first.

mmengine's Runner logs the environment and the whole config, hundreds of
lines, before it builds the model: a bad attention option would be the
last line of a long dump. ``check_model`` builds the model first, on the
meta device (nothing allocated or initialised; well under a second for a
ResNet-101 Mask R-CNN), and lets a configuration error through.
"""
import copy

import torch
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

# The errors a wrong config raises while its model is built.
CONFIG_ERRORS = (KeyError, TypeError, ValueError, ImportError)


def _build(cfg: Config, meta: bool) -> None:
    model = copy.deepcopy(cfg.model)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        if meta:
            with torch.device('meta'):
                MODELS.build(model)
        else:
            MODELS.build(model)


def check_model(cfg: Config) -> None:
    """Raise the error building ``cfg.model`` raises, if it is one a config
    causes (``KeyError``, ``TypeError``, ``ValueError``, ``ImportError``).

    Any error on the meta device is confirmed by a build on the CPU: some
    modules read a tensor's value while they are built (VAN's stochastic
    depth rates), which a meta tensor cannot give. Other errors are left
    to the runner's own build, which shows their traceback.
    """
    if cfg.get('model') is None:
        return
    try:
        _build(cfg, meta=True)
        return
    except Exception:
        pass
    try:
        _build(cfg, meta=False)
    except CONFIG_ERRORS:
        raise
    except Exception:
        return
