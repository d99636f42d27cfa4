"""Load checkpoints without running code from them.

Every checkpoint mmsa reads goes through :func:`safe_load`: tensors,
containers, plain Python values and the few types in mmengine's own
checkpoints load, while a file that needs anything else unpickled (an object
whose ``__reduce__`` names a function to call) is refused before anything in
it runs. How depends on what the installed torch can do:

- torch that allow-lists globals under their pickled names (2.6 and later):
  ``torch.load(weights_only=True)``, mmengine's types added by
  :func:`allow_mmengine_checkpoint_types`;
- older torch (2.1 to 2.5): ``torch.load`` with mmsa's restricted unpickler,
  which resolves only torch's own weights-only allow-list and the same
  mmengine types.

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` changes neither (torch honours it only
where ``weights_only`` is not passed), and both refuse a file with the same
:class:`UnsafeCheckpointError` message.

mmengine 0.10.7 reads checkpoints with a bare ``torch.load`` (``load_from``,
``--resume``, ``init_cfg=dict(type='Pretrained')``, ``open-mmlab://`` ...),
which runs code from the file on torch < 2.6 or with that variable set, and
on torch >= 2.6 refuses mmengine's own checkpoints.
:func:`register_checkpoint_loaders`, run when mmsa is imported, replaces each
of mmengine's checkpoint loaders with one that reads through
:func:`safe_load`.
"""
import _compat_pickle
import argparse
import codecs
import collections
import functools
import io
import os
import os.path as osp
import pickle
import re
import types
from tempfile import TemporaryDirectory
from typing import IO, Any, Collection, Dict, List, Optional, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch
import torch.nn as nn

from ..errors import (CheckpointNotFoundError, UnreadableCheckpointError,
                      UnsafeCheckpointError)
from .compat import numpy_pickle_functions, safe_globals_accept_names

__all__ = [
    'UnsafeCheckpointError', 'UnreadableCheckpointError', 'safe_load',
    'checkpoint_keys', 'allow_mmengine_checkpoint_types',
    'register_checkpoint_loaders', 'attention_modules_without_weights'
]

# What to do with a refused file. Never "load it with weights_only=False":
# that runs whatever the file holds.
_UNSAFE_HINT = (
    'If it comes from a source you trust, save its weights alone where it '
    "was made (e.g. torch.save({'state_dict': model.state_dict()}, "
    "'clean.pth') in the code that trained it) or ask its provider for a "
    'weights-only file, and load that file instead.')
_REDO_HINT = ('Delete it and use an earlier checkpoint of the run, or copy '
              'or download the file again.')
_ZIP_MAGIC = b'PK\x03\x04'  # torch.save's format since torch 1.6


def _history_buffer_attribute(obj: Any, name: str) -> Any:
    """The ``getattr`` that mmengine checkpoints need, and only that one.

    ``HistoryBuffer`` pickles its statistics methods (``min``, ``mean``...)
    as ``getattr(HistoryBuffer, 'min')``; any other use is refused.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    attr = getattr(HistoryBuffer, name, None) if isinstance(name, str) \
        else None
    if obj is not HistoryBuffer or not isinstance(
            attr, types.FunctionType) or name.startswith('_'):
        raise pickle.UnpicklingError(
            f'GLOBAL builtins.getattr is allowed by mmsa only for '
            f'HistoryBuffer methods, not for getattr({obj!r}, {name!r})')
    return attr


@functools.lru_cache(maxsize=None)
def _checkpoint_globals() -> Dict[str, Any]:
    """The globals mmsa allows beyond torch's, by the names pickles use.

    A Runner checkpoint holds, besides tensors and plain values, the message
    hub's ``HistoryBuffer`` objects, their numpy arrays and scalars (the
    arrays' reconstructor, ``ndarray``, ``dtype`` and the numeric dtype
    classes, ``codecs.encode`` for their bytes) and
    ``getattr(HistoryBuffer, <statistics method>)``. timm's
    training script (VAN's official checkpoints) stores its arguments as an
    ``argparse.Namespace``, a holder of plain values. Nothing that can call
    other functions is among them.
    """
    from mmengine.logging.history_buffer import HistoryBuffer
    reconstruct, scalar = numpy_pickle_functions()
    found = {
        'mmengine.logging.history_buffer.HistoryBuffer': HistoryBuffer,
        'numpy.ndarray': np.ndarray,
        'numpy.dtype': np.dtype,
        'builtins.getattr': _history_buffer_attribute,
        'argparse.Namespace': argparse.Namespace,
        # how protocol-2 pickles (torch.save's) carry bytes
        '_codecs.encode': codecs.encode,
    }
    numeric = (np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8,
               np.uint16, np.uint32, np.uint64, np.float16, np.float32,
               np.float64, np.complex64, np.complex128)
    for dtype_class in {type(np.dtype(t)) for t in numeric}:
        found[f'{dtype_class.__module__}.{dtype_class.__name__}'] = \
            dtype_class
    # numpy 2 pickles under numpy._core, numpy 1 under numpy.core; a
    # checkpoint written with either loads with either.
    for module in ('numpy._core.multiarray', 'numpy.core.multiarray'):
        found[f'{module}._reconstruct'] = reconstruct
        found[f'{module}.scalar'] = scalar
    return found


def allow_mmengine_checkpoint_types() -> bool:
    """Allow-list the types in mmengine's checkpoints for ``weights_only``.

    Adds mmsa's allow-list (:func:`_checkpoint_globals`) to torch's safe
    globals where torch can take them under their pickled names (torch 2.6 and
    later), so that also a plain ``torch.load`` of an mmengine checkpoint
    works under torch's weights-only default. Idempotent.

    Returns:
        bool: Whether torch took them. Where it cannot, :func:`safe_load`
        reads with mmsa's restricted unpickler, which knows them already.
    """
    if not safe_globals_accept_names():
        return False
    torch.serialization.add_safe_globals([
        (obj, name) for name, obj in _checkpoint_globals().items()
    ])
    return True


@functools.lru_cache(maxsize=None)
def _restricted_globals() -> Dict[str, Any]:
    import torch._weights_only_unpickler as weights_only
    allowed = dict(weights_only._get_allowed_globals())
    # Plain values that torch 2.6's list has and 2.1's lacks, so a file
    # loads alike on every torch (schedulers' milestones are Counters).
    allowed.update({
        f'builtins.{t.__name__}': t
        for t in (set, frozenset, bytearray, complex)
    })
    allowed['collections.Counter'] = collections.Counter
    allowed['torch.device'] = torch.device
    allowed.update({
        str(t): t
        for t in vars(torch).values() if isinstance(t, torch.dtype)
    })
    allowed.update(_checkpoint_globals())
    return allowed


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only allow-listed globals, so only allow-listed code can be
    called while unpickling (the Python documentation's "Restricting
    Globals"); torch's own ``find_class`` still handles storages first."""

    def find_class(self, module: str, name: str) -> Any:
        # Python 2 names, which protocol-2 pickles (torch.save) use for
        # builtins, mapped as pickle's own find_class maps them
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        else:
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = _restricted_globals().get(f'{module}.{name}')
        if found is None:
            raise pickle.UnpicklingError(
                f'Unsupported global: GLOBAL {module}.{name} is not '
                f'allowed')
        return found


def _restricted_load(file: IO[bytes], **kwargs) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# torch.load(pickle_module=...) takes a module with Unpickler and load.
_RESTRICTED_PICKLE = types.ModuleType(
    'mmsa_restricted_pickle', 'pickle, resolving allow-listed globals only')
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = _restricted_load


def _torch_forces_weights_only() -> bool:
    # torch refuses a pickle_module while this is set, and enforces its own
    # (stricter) weights-only load instead.
    return os.environ.get('TORCH_FORCE_WEIGHTS_ONLY_LOAD',
                          '0').lower() in ('1', 'y', 'yes', 'true')


def _torch_load(file: Union[str, IO[bytes]], map_location: Any) -> Any:
    if safe_globals_accept_names() or _torch_forces_weights_only():
        return torch.load(file, map_location=map_location, weights_only=True)
    # torch < 2.6: its weights-only unpickler cannot take mmengine's types
    # under their pickled names, so mmsa's restricted one reads the file.
    return torch.load(file,
                      map_location=map_location,
                      pickle_module=_RESTRICTED_PICKLE,
                      weights_only=False)


def _size_and_head(file: Union[str, IO[bytes]]) -> Tuple[int, bytes]:
    if isinstance(file, str):
        with open(file, 'rb') as f:
            return osp.getsize(file), f.read(4)
    position = file.tell()
    head = file.read(4)
    size = file.seek(0, io.SEEK_END)
    file.seek(position)
    return size, head


def safe_load(file: Union[str, os.PathLike, IO[bytes]],
              map_location: Any = 'cpu',
              name: Optional[str] = None) -> Any:
    """Load a checkpoint weights-only, on every supported torch.

    Args:
        file (str | PathLike | file object): A local checkpoint file, or a
            binary file object holding one.
        map_location: As in :func:`torch.load`. Defaults to ``'cpu'``.
        name (str, optional): How messages name the checkpoint, e.g. the
            URL it was read from. Defaults to the path.

    Returns:
        The loaded object (usually a dict of tensors or a dict holding one).

    Raises:
        UnsafeCheckpointError: The file needs more than tensors, containers,
            plain values and mmengine's checkpoint types to be unpickled;
            nothing from it was executed.
        UnreadableCheckpointError: The file is empty, truncated or no torch
            checkpoint.
        CheckpointNotFoundError: There is no file at the path (a
            ``FileNotFoundError``).
    """
    if isinstance(file, (str, os.PathLike)):
        file = osp.expanduser(os.fspath(file))
        name = name or file
        if not osp.isfile(file):
            where = '' if osp.isabs(file) else \
                f' (relative paths start at {os.getcwd()})'
            raise CheckpointNotFoundError(
                f'checkpoint {name} does not exist{where}; check the path')
    name = name or repr(file)
    size, head = _size_and_head(file)
    if size == 0:
        raise UnreadableCheckpointError(
            f'cannot load checkpoint {name}: the file is empty (0 bytes); '
            f'the save or download that wrote it stopped before writing '
            f'anything. {_REDO_HINT}')
    try:
        return _torch_load(file, map_location)
    except pickle.UnpicklingError as err:
        # what the weights-only unpickler refused to resolve, call or
        # build (a numpy array of Python objects: numpy.dtypes.ObjectDType)
        refused = re.search(
            r"GLOBAL ([\w.]+)|unrecognized function `?([\w.]+)|"
            r"Can only build .* but got <class '([\w.]+)'>", str(err))
        if refused is None:
            # from None: torch's text advises weights_only=False
            raise _unreadable(name, size, head, err) from None
        named = next(g for g in refused.groups() if g)
        if '.' not in named:  # newer torch names builtins without module
            named = f'builtins.{named}'
        if named in _checkpoint_globals() and _torch_forces_weights_only() \
                and not safe_globals_accept_names():
            raise UnsafeCheckpointError(
                f'cannot load checkpoint {name}: TORCH_FORCE_WEIGHTS_ONLY_LOAD'
                f' is set, which makes this torch ({torch.__version__}) read '
                f'with its own weights-only allow-list, and that lacks {named}'
                f' (part of mmengine checkpoints). Unset it: mmsa loads every '
                f'checkpoint weights-only anyway.') from None
        raise UnsafeCheckpointError(
            f'Refusing to load {name}: it holds more than tensors, '
            f'containers, plain values and mmengine\'s checkpoint types (it '
            f'names {named}), and unpickling '
            f'it would run arbitrary code from the file. Nothing from it was '
            f'executed: mmsa loads every checkpoint weights-only (as '
            f'torch.load(weights_only=True) does), whatever the torch '
            f'version or TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD. {_UNSAFE_HINT}'
        ) from None
    except (EOFError, RuntimeError, KeyError, ValueError, OSError) as err:
        # torch's errors for files that are no (complete) checkpoint (2.1
        # reports a cut zip archive as OSError "Invalid argument")
        raise _unreadable(name, size, head, err) from err


def _unreadable(name: str, size: int, head: bytes,
                err: BaseException) -> UnreadableCheckpointError:
    # torch >= 2.6 wraps the reason in advice to load with
    # weights_only=False; only the reason is kept
    reason = re.search(r'WeightsUnpickler error:\s*(\S.*)', str(err))
    detail = reason.group(1) if reason else \
        (str(err).strip().splitlines() or [''])[0]
    detail = f'{type(err).__name__}: {detail}' if detail else \
        type(err).__name__
    if head == _ZIP_MAGIC or isinstance(err, EOFError) or \
            'truncated' in detail:
        return UnreadableCheckpointError(
            f'cannot load checkpoint {name}: it is truncated or corrupt '
            f'({size} bytes; {detail}); a save or download was probably cut '
            f'short (disk full, process killed). {_REDO_HINT}')
    return UnreadableCheckpointError(
        f'cannot load checkpoint {name}: it is not a readable torch '
        f'checkpoint ({detail}); check that the path names a file written '
        f'by torch.save (.pth)')


def _state_dict_of(checkpoint: Any) -> Dict[str, Any]:
    if isinstance(checkpoint, dict) and isinstance(
            checkpoint.get('state_dict'), dict):
        return checkpoint['state_dict']
    return checkpoint if isinstance(checkpoint, dict) else {}


def checkpoint_keys(checkpoint: str,
                    prefix: Optional[str] = None,
                    map_location: Any = 'cpu') -> List[str]:
    """The state-dict keys mmengine's ``Pretrained`` init would load.

    Mirrors ``mmengine.model.PretrainedInit``: the ``state_dict`` entry if
    there is one, ``module.`` stripped when no ``prefix`` is given, otherwise
    only the keys under ``prefix`` with it stripped.

    Args:
        checkpoint (str): A local file (loaded with :func:`safe_load`) or any
            address mmengine understands (``open-mmlab://``, ``https://``).
        prefix (str, optional): As ``Pretrained``'s ``prefix``, e.g.
            ``'backbone.'``. Defaults to None.
        map_location: As in :func:`torch.load`. Defaults to ``'cpu'``.
    """
    if osp.isfile(checkpoint):
        loaded = safe_load(checkpoint, map_location)
    else:
        from mmengine.runner.checkpoint import CheckpointLoader
        loaded = CheckpointLoader.load_checkpoint(checkpoint, map_location)
    keys = list(_state_dict_of(loaded))
    if prefix is None:
        return [re.sub(r'^module\.', '', k) for k in keys]
    if not prefix.endswith('.'):
        prefix += '.'
    return [k[len(prefix):] for k in keys if k.startswith(prefix)]


def attention_modules_without_weights(model: nn.Module,
                                      keys: Collection[str]) -> List[str]:
    """Paths of the mmsa attention modules in ``model`` (``layer1.0.sa``,
    ``bam1``) none of whose tensors are among ``keys``."""
    from ..registry import ATTENTIONS
    classes = tuple(ATTENTIONS.values())
    keys = set(keys)
    found: List[str] = []
    for path, module in model.named_modules():
        if not isinstance(module, classes) or any(
                path.startswith(f'{p}.') for p in found):
            continue
        names = [
            f'{path}.{k}' for k in module.state_dict()
            if not k.endswith('num_batches_tracked')
        ]
        if names and not keys.intersection(names):
            found.append(path)
    return found


def load_from_local(filename: str, map_location: Any = None) -> Any:
    """mmengine's ``''`` (local file) scheme through :func:`safe_load`."""
    return safe_load(filename, map_location)


def _download(url: str, model_dir: Optional[str]) -> str:
    # the cache torch.hub.load_state_dict_from_url (mmengine's load_url)
    # uses, so files downloaded before are found again
    model_dir = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    os.makedirs(model_dir, exist_ok=True)
    path = osp.join(model_dir, osp.basename(urlparse(url).path))
    if not osp.exists(path):  # torch writes a temporary file, then renames
        torch.hub.download_url_to_file(url, path, progress=os.isatty(0))
    return path


def load_from_http(filename: str,
                   map_location: Any = None,
                   model_dir: Optional[str] = None) -> Any:
    """mmengine's ``http://``/``https://`` scheme through :func:`safe_load`:
    rank 0 downloads first, the other ranks then read its copy."""
    from mmengine.dist import get_dist_info
    rank, world_size = get_dist_info()
    if rank == 0:
        path = _download(filename, model_dir)
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            path = _download(filename, model_dir)
    return safe_load(path, map_location, name=filename)


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` (and the old ``modelzoo://NAME``)."""
    from mmengine.runner.checkpoint import get_torchvision_models
    model_name = filename.split('://', 1)[1]
    return load_from_http(get_torchvision_models()[model_name], map_location)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` (and ``openmmlab://NAME``)."""
    from mmengine.runner.checkpoint import (_get_mmengine_home,
                                            get_deprecated_model_names,
                                            get_external_models)
    model_name = filename.split('://', 1)[1]
    model_name = get_deprecated_model_names().get(model_name, model_name)
    url = get_external_models()[model_name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return safe_load(osp.join(_get_mmengine_home(), url), map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``, its keys renamed as mmengine does."""
    from mmengine.runner.checkpoint import (_process_mmcls_checkpoint,
                                            get_mmcls_models)
    url = get_mmcls_models()[filename.split('://', 1)[1]]
    return _process_mmcls_checkpoint(load_from_http(url, map_location))


def load_from_ceph(filename: str,
                   map_location: Any = None,
                   backend: str = 'petrel') -> Any:
    """``s3://`` and ``petrel://`` through mmengine's file backend."""
    from mmengine.fileio import get_file_backend
    data = get_file_backend(filename,
                            backend_args=dict(backend=backend)).get(filename)
    with io.BytesIO(data) as buffer:
        return safe_load(buffer, map_location, name=filename)


def load_from_pavi(filename: str, map_location: Any = None) -> Any:
    """``pavi://`` (OpenMMLab's model cloud)."""
    try:
        from pavi import modelcloud
    except ImportError:
        raise ImportError(
            f'{filename}: install pavi to load checkpoints from its model '
            f'cloud') from None
    model = modelcloud.get(filename[len('pavi://'):])
    with TemporaryDirectory() as tmp_dir:
        path = osp.join(tmp_dir, model.name)
        model.download(path)
        return safe_load(path, map_location, name=filename)


# mmengine 0.10.7's schemes, each of which ends in a bare torch.load.
_LOADERS = (
    ('', load_from_local),
    (('http://', 'https://'), load_from_http),
    (('modelzoo://', 'torchvision://'), load_from_torchvision),
    (('open-mmlab://', 'openmmlab://'), load_from_openmmlab),
    ('mmcls://', load_from_mmcls),
    ([r'(\S+\:)?s3://', r'(\S+\:)?petrel://'], load_from_ceph),
    ('pavi://', load_from_pavi),
)


def register_checkpoint_loaders() -> None:
    """Make every checkpoint mmengine reads go through :func:`safe_load`.

    Overrides mmengine's loader for each of its schemes (local files, URLs,
    ``open-mmlab://`` ...), which all runner loads use: ``load_from``,
    ``resume`` (also automatic), ``init_cfg=dict(type='Pretrained')``,
    ``load_checkpoint`` in tools. Also allow-lists mmengine's checkpoint
    types for torch's own weights-only loads where torch can take them
    (:func:`allow_mmengine_checkpoint_types`). Idempotent; runs when mmsa is
    imported.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    allow_mmengine_checkpoint_types()
    for prefixes, loader in _LOADERS:
        CheckpointLoader.register_scheme(prefixes, loader, force=True)
