"""Checkpoint files mmsa must refuse: each kind, and what the refusal says.

A *payload* file would run code when unpickled: its code writes a marker
file, whose absence proves nothing of it ran. The other kinds are files a
careless user hands over: cut short, empty, not a checkpoint, the
checkpoint of another model.
"""
import os
from pathlib import Path
from typing import Callable, Dict, NamedTuple

import numpy as np
import torch
import torch.nn as nn


class Payload:
    """Unpickling this runs code: it writes the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f'open({str(self.marker)!r}, "w").write("pwned")', ))


class SystemPayload(Payload):
    """The classic: ``os.system`` with a shell command."""

    def __reduce__(self):
        return (os.system, (f'touch {self.marker}', ))


class HistoryBufferSmuggler(Payload):
    """``getattr`` is allowed for mmengine's HistoryBuffer statistics
    methods only; this asks it for something else."""

    def __reduce__(self):
        from mmengine.logging.history_buffer import HistoryBuffer
        return (getattr, (HistoryBuffer, '__init__'))


def evil_checkpoint(tmp_path: Path, name: str = 'evil.pth') -> tuple:
    """A checkpoint with real weights and a payload beside them."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / name
    torch.save(dict(state_dict=dict(w=torch.ones(2)), extra=Payload(marker)),
               path)
    return path, marker


class Kind(NamedTuple):
    """How to write one kind of file, and what its refusal must say."""
    write: Callable[[Path, Path, Dict[str, torch.Tensor]], None]
    says: str


def _save(obj, legacy: bool = False) -> Callable:

    def write(path: Path, marker: Path, weights) -> None:
        torch.save(obj(marker, weights), path,
                   _use_new_zipfile_serialization=not legacy)

    return write


def _truncated(path: Path, marker: Path, weights) -> None:
    torch.save(dict(state_dict=weights), path)
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def _bytes(data: bytes) -> Callable:

    def write(path: Path, marker: Path, weights) -> None:
        path.write_bytes(data)

    return write


def _other_model(marker: Path, weights) -> dict:
    gen = torch.Generator().manual_seed(0)
    return dict(state_dict={
        'encoder.fc.weight': torch.randn(10, 4, generator=gen),
        'encoder.fc.bias': torch.randn(10, generator=gen)
    })


NEEDS_CODE = 'unpickling it would run arbitrary code from the file'
# Every kind, by name. ``weights`` are the state dict of the model the file
# is meant for (so only the kind's defect is wrong).
KINDS = {
    'exec_zip':
    Kind(_save(lambda m, w: dict(state_dict=w, extra=Payload(m))),
         NEEDS_CODE),
    'exec_legacy_pickle':
    Kind(_save(lambda m, w: dict(state_dict=w, extra=Payload(m)), True),
         NEEDS_CODE),
    'os_system':
    Kind(_save(lambda m, w: dict(state_dict=w, hook=SystemPayload(m))),
         NEEDS_CODE),
    'numpy_object_array':
    Kind(_save(lambda m, w: dict(state_dict=w, meta=dict(
        stats=np.array([Payload(m), 1], dtype=object)))), NEEDS_CODE),
    'whole_pickled_module':
    Kind(_save(lambda m, w: nn.Linear(2, 2)), NEEDS_CODE),
    'getattr_smuggler':
    Kind(_save(lambda m, w: dict(state_dict=w,
                                 x=HistoryBufferSmuggler(m))), NEEDS_CODE),
    'truncated':
    Kind(_truncated, 'is truncated or corrupt'),
    'empty':
    Kind(_bytes(b''), 'the file is empty (0 bytes)'),
    'text':
    Kind(_bytes(b'not a checkpoint\n' * 20),
         'it is not a readable torch checkpoint'),
    'no_weights':
    Kind(_save(lambda m, w: dict(epoch=3, lr=0.1)),
         'it holds no model weights'),
    'other_model':
    Kind(_save(_other_model), "does not fit this config's model"),
}
