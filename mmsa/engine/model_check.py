"""Build a config's model before the runner, so its errors come first.

mmengine's Runner logs the environment and the whole config, hundreds of
lines, before it builds the model: a bad attention option would be the
last line of a long dump. ``check_model`` builds the model first, on the
meta device (nothing allocated or initialised; well under a second for a
ResNet-101 Mask R-CNN), and lets mmsa's configuration errors through. The
model it returns serves to check checkpoints against
(:func:`~mmsa.engine.checkpoints.check_checkpoint`).
"""
import copy
from typing import Optional

import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS, DefaultScope

from ..errors import MMSAError


def _build(cfg: Config, meta: bool) -> nn.Module:
    model = copy.deepcopy(cfg.model)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope')):
        if meta:
            with torch.device('meta'):
                return MODELS.build(model)
        return MODELS.build(model)


def check_model(cfg: Config) -> Optional[nn.Module]:
    """Build ``cfg.model``; raise the error building it raises if it is
    one of mmsa's own (a :class:`~mmsa.errors.ConfigError` ...).

    Any error on the meta device is confirmed by a build on the CPU: some
    modules read a tensor's value while they are built (VAN's stochastic
    depth rates), which a meta tensor cannot give. Other errors are left
    to the runner's own build, which shows their traceback.

    Returns:
        nn.Module | None: The model (its tensors on the meta device where
        that build worked); None when the config has no model or building
        it failed with an error that is not mmsa's.
    """
    if cfg.get('model') is None:
        return None
    try:
        return _build(cfg, meta=True)
    except Exception:
        pass
    try:
        return _build(cfg, meta=False)
    except MMSAError:
        raise
    except Exception:
        return None
