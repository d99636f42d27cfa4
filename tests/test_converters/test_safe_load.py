"""Checkpoints load with weights_only=True: code in them never runs, and
mmengine's own (resume) checkpoints still load."""
import ast
import pickle
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import mmsa
from mmsa.utils import (UnsafeCheckpointError, allow_mmengine_checkpoint_types,
                        safe_load)

MMSA = Path(mmsa.__file__).parent


class _Payload:
    """Unpickling this runs code: it writes a file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        return (exec, (f'open({str(self.target)!r}, "w").write("pwned")', ))


def test_malicious_pickle_is_refused_and_its_payload_never_runs(tmp_path):
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(2)), extra=_Payload(marker)),
               path)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(str(path))
    assert not marker.exists()
    msg = str(err.value)
    assert str(path) in msg and 'exec' in msg
    assert 'arbitrary code' in msg and 'weights_only=True' in msg
    assert "torch.save({'state_dict'" in msg  # how to re-save it safely
    assert isinstance(err.value, pickle.UnpicklingError)


def test_malicious_pickle_is_refused_by_the_converter_tool(tmp_path):
    pytest.importorskip('mmdet')
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location(
        'convert_weights',
        MMSA.parent / 'tools' / 'model_converters' / 'convert_weights.py')
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'evil.pth'
    torch.save(_Payload(marker), path)
    with pytest.raises(SystemExit, match='Refusing to load'):
        tool.main(
            ['--from', 'torchvision',
             str(path),
             str(tmp_path / 'out.pth')])
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_non_checkpoint_file_gives_a_readable_error(tmp_path):
    path = tmp_path / 'notes.pth'
    path.write_text('not a checkpoint')
    with pytest.raises(OSError, match='not a readable torch checkpoint'):
        safe_load(str(path))


def test_every_torch_load_in_mmsa_is_weights_only():
    calls = []
    for file in MMSA.rglob('*.py'):
        for node in ast.walk(ast.parse(file.read_text())):
            if (isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == 'load'
                    and getattr(node.func.value, 'id', None) == 'torch'):
                calls.append(file.name)
                kw = {k.arg: k.value for k in node.keywords}
                assert 'weights_only' in kw and \
                    kw['weights_only'].value is True, file
    assert 'checkpoint.py' in calls


class _Toy(nn.Module):

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(2, 1)


def _train_and_save(work_dir: Path, max_epochs: int, resume: bool = False):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class ToyModel(BaseModel):

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, inputs, targets=None, mode='loss'):
            out = self.fc(inputs)
            return dict(loss=((out - targets)**2).mean())

    data = [
        dict(inputs=torch.randn(2), targets=torch.randn(1)) for _ in range(4)
    ]
    runner = Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        train_dataloader=dict(dataset=data,
                              batch_size=2,
                              collate_fn=dict(type='default_collate'),
                              sampler=dict(type='DefaultSampler',
                                           shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=dict(type='MultiStepLR', milestones=[1]),
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1)),
        resume=resume,
        experiment_name=f'toy_{max_epochs}',
        randomness=dict(seed=0))
    runner.train()
    return runner


def test_mmengine_checkpoint_resumes_under_weights_only(tmp_path, monkeypatch):
    monkeypatch.delenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', raising=False)
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    _train_and_save(tmp_path, max_epochs=1)
    path = tmp_path / 'epoch_1.pth'

    # What the checkpoint holds besides tensors, as CheckpointHook saved it.
    loaded = torch.load(path)  # plain torch.load, as mmengine calls it
    buffers = loaded['message_hub']['log_scalars']
    assert type(buffers['train/loss']).__name__ == 'HistoryBuffer'
    assert buffers['train/loss'].statistics('mean') > 0

    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
            torch.load(path)
    finally:
        torch.serialization.add_safe_globals(saved)
    allow_mmengine_checkpoint_types()

    runner = _train_and_save(tmp_path, max_epochs=2, resume=True)
    assert runner.train_loop.epoch == 2
    assert (tmp_path / 'epoch_2.pth').exists()


def test_safe_getattr_allows_only_history_buffer_methods(tmp_path):
    from mmengine.logging.history_buffer import HistoryBuffer

    class Smuggler:

        def __reduce__(self):
            return (getattr, (HistoryBuffer, '__init__'))

    path = tmp_path / 'smuggle.pth'
    torch.save(dict(x=Smuggler()), path)
    with pytest.raises(UnsafeCheckpointError):
        safe_load(str(path))
