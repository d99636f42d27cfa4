"""Checkpoints load weights-only on every torch: code in them never runs,
whichever mmengine path reads them and whatever the environment says, and
mmengine's own (resume) checkpoints still load."""
import ast
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from payloads import HistoryBufferSmuggler, Payload, evil_checkpoint

import mmsa
import mmsa.utils.checkpoint as checkpoint_module
from mmsa.utils import (UnreadableCheckpointError, UnsafeCheckpointError,
                        allow_mmengine_checkpoint_types, safe_load)
from mmsa.utils.compat import safe_globals_accept_names

MMSA = Path(mmsa.__file__).parent


@pytest.fixture(params=['torch', 'restricted'])
def load_path(request, monkeypatch):
    """Both ways safe_load reads: torch's weights-only unpickler with mmsa's
    allow-list (torch >= 2.6), and mmsa's restricted unpickler (older)."""
    if request.param == 'torch' and not safe_globals_accept_names():
        pytest.skip('this torch cannot allow-list globals by name (< 2.6)')
    if request.param == 'restricted':
        monkeypatch.setattr(checkpoint_module, 'safe_globals_accept_names',
                            lambda: False)
    return request.param


def test_malicious_pickle_is_refused_and_its_payload_never_runs(
        tmp_path, load_path):
    path, marker = evil_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(str(path))
    assert not marker.exists()
    msg = str(err.value)
    assert str(path) in msg and 'builtins.exec' in msg
    assert 'arbitrary code' in msg and 'Nothing from it was executed' in msg
    assert "torch.save({'state_dict'" in msg  # how to save weights alone
    assert isinstance(err.value, pickle.UnpicklingError)


def test_numpy_object_array_is_refused_as_code_not_as_corrupt(
        tmp_path, load_path):
    """An array of Python objects needs their code to load: torch >= 2.6
    refuses to build it (it names the dtype), mmsa's restricted unpickler
    the object's function; neither calls it truncated."""
    marker = tmp_path / 'payload_ran'
    path = tmp_path / 'stats.pth'
    torch.save(dict(state_dict=dict(w=torch.ones(2)),
                    stats=np.array([Payload(marker), 1], dtype=object)),
               path)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(str(path))
    assert not marker.exists()
    named = 'builtins.exec' if load_path == 'restricted' else \
        'numpy.dtypes.ObjectDType'
    assert f'(it names {named})' in str(err.value)
    assert 'truncated' not in str(err.value)


def test_refusal_never_advises_loading_with_weights_only_false(
        tmp_path, load_path):
    path, _ = evil_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as err:
        safe_load(str(path))
    msg = str(err.value)
    assert 'weights_only=False' not in msg.replace(' ', '')
    assert 'will likely succeed' not in msg  # torch's own advice
    assert err.value.__cause__ is None and err.value.__suppress_context__


def test_refusal_reads_the_same_on_every_torch(tmp_path, monkeypatch):
    if not safe_globals_accept_names():
        pytest.skip('only one loading path on this torch (< 2.6)')
    path, marker = evil_checkpoint(tmp_path)
    with pytest.raises(UnsafeCheckpointError) as by_torch:
        safe_load(str(path))
    monkeypatch.setattr(checkpoint_module, 'safe_globals_accept_names',
                        lambda: False)
    with pytest.raises(UnsafeCheckpointError) as by_mmsa:
        safe_load(str(path))
    assert str(by_torch.value) == str(by_mmsa.value)
    assert not marker.exists()


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
    torch.save(Payload(marker), path)
    with pytest.raises(SystemExit, match='Refusing to load'):
        tool.main(
            ['--from', 'torchvision',
             str(path),
             str(tmp_path / 'out.pth')])
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_non_checkpoint_file_gives_a_readable_error(tmp_path, load_path):
    path = tmp_path / 'notes.pth'
    path.write_text('not a checkpoint')
    with pytest.raises(UnreadableCheckpointError,
                       match='not a readable torch checkpoint') as err:
        safe_load(str(path))
    assert str(path) in str(err.value)
    assert 'weights_only' not in str(err.value)
    assert 'weights_only' not in str(err.value.__cause__ or '')


@pytest.mark.parametrize('zipped', [True, False])
def test_weights_load_in_both_torch_formats(tmp_path, load_path, zipped):
    """torch.save's zip format (torch >= 1.6) and the older plain pickle,
    in which e.g. torchvision's ImageNet ResNets were published."""
    gen = torch.Generator().manual_seed(0)
    state = dict(w=torch.randn(3, 4, generator=gen),
                 step=torch.tensor(7),
                 half=torch.randn(5, generator=gen).half())
    path = tmp_path / 'weights.pth'
    torch.save(dict(state_dict=state, meta=dict(epoch=3, lr=0.1)),
               path,
               _use_new_zipfile_serialization=zipped)
    loaded = safe_load(str(path))
    assert loaded['meta'] == dict(epoch=3, lr=0.1)
    assert loaded['state_dict'].keys() == state.keys()
    for key, value in state.items():
        assert loaded['state_dict'][key].dtype == value.dtype
        assert torch.equal(loaded['state_dict'][key], value)


def test_missing_checkpoint_names_the_path_and_where_relative_ones_start(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as err:
        safe_load('work_dirs/epoch_9.pth')
    assert str(err.value) == (
        f'checkpoint work_dirs/epoch_9.pth does not exist (relative paths '
        f'start at {tmp_path}); check the path')
    with pytest.raises(FileNotFoundError) as err:
        safe_load(str(tmp_path / 'epoch_9.pth'))
    assert str(err.value) == (
        f'checkpoint {tmp_path}/epoch_9.pth does not exist; check the path')


def _renamed_globals(path: Path, old: bytes, new: bytes) -> None:
    """Rewrite the module of a pickled global, as another numpy names it
    (protocol 2 writes GLOBAL as text lines)."""
    with zipfile.ZipFile(path) as src:
        members = [(info.filename, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as dst:
        for name, data in members:
            if name.endswith('data.pkl'):
                assert b'c' + old + b'\n' in data
                data = data.replace(b'c' + old + b'\n', b'c' + new + b'\n')
            dst.writestr(name, data)


@pytest.mark.parametrize('written_by', ['numpy 1', 'numpy 2'])
def test_numpy_values_load_whichever_numpy_wrote_them(tmp_path, load_path,
                                                      written_by):
    """numpy 2 pickles arrays under numpy._core, numpy 1 under numpy.core;
    resume and Pretrained must not depend on which one saved the file."""
    gen = np.random.default_rng(0)
    values = dict(array=gen.standard_normal(5),
                  scalar=np.float64(gen.random()))
    path = tmp_path / 'hub.pth'
    torch.save(values, path)
    names = (b'numpy.core.multiarray', b'numpy._core.multiarray')
    with zipfile.ZipFile(path) as src:
        pickled = next(
            src.read(n) for n in src.namelist() if n.endswith('data.pkl'))
    mine = names[1] if b'c' + names[1] + b'\n' in pickled else names[0]
    wanted = names[0] if written_by == 'numpy 1' else names[1]
    if wanted != mine:
        _renamed_globals(path, mine, wanted)
    loaded = safe_load(str(path))
    np.testing.assert_array_equal(loaded['array'], values['array'])
    assert loaded['scalar'] == values['scalar']
    assert type(loaded['scalar']) is np.float64


def test_empty_checkpoint_names_the_file_and_what_to_do(tmp_path):
    path = tmp_path / 'epoch_3.pth'
    path.write_bytes(b'')
    with pytest.raises(UnreadableCheckpointError) as err:
        safe_load(str(path))
    msg = str(err.value)
    assert str(path) in msg and 'empty (0 bytes)' in msg
    assert 'use an earlier checkpoint' in msg


@pytest.mark.parametrize('kept', [0.1, 0.5, 0.9])
def test_truncated_checkpoint_names_the_file_and_what_to_do(
        tmp_path, load_path, kept):
    torch.manual_seed(0)
    whole = tmp_path / 'whole.pth'
    torch.save(dict(state_dict=dict(w=torch.randn(64, 64))), whole)
    data = whole.read_bytes()
    path = tmp_path / 'epoch_3.pth'
    path.write_bytes(data[:int(len(data) * kept)])
    with pytest.raises(UnreadableCheckpointError) as err:
        safe_load(str(path))
    msg = str(err.value)
    assert str(path) in msg and 'truncated or corrupt' in msg
    assert 'use an earlier checkpoint' in msg
    assert 'weights_only' not in msg


def test_every_torch_load_in_mmsa_reads_weights_only():
    """Each call passes weights_only=True or mmsa's restricted unpickler."""
    calls = []
    for file in list(MMSA.rglob('*.py')) + list(
        (MMSA.parent / 'tools').rglob('*.py')):
        for node in ast.walk(ast.parse(file.read_text())):
            if (isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr == 'load'
                    and getattr(node.func.value, 'id', None) == 'torch'):
                calls.append(file.name)
                kw = {k.arg: k.value for k in node.keywords}
                weights_only = getattr(kw.get('weights_only'), 'value', None)
                restricted = getattr(kw.get('pickle_module'), 'id', None)
                assert weights_only is True or \
                    restricted == '_RESTRICTED_PICKLE', file
    assert calls.count('checkpoint.py') == 2, calls


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


def test_mmengine_checkpoint_resumes_through_mmsa(tmp_path, monkeypatch,
                                                  load_path):
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    _train_and_save(tmp_path, max_epochs=1)
    loaded = safe_load(tmp_path / 'epoch_1.pth')
    buffers = loaded['message_hub']['log_scalars']
    assert type(buffers['train/loss']).__name__ == 'HistoryBuffer'
    assert buffers['train/loss'].statistics('mean') > 0
    runner = _train_and_save(tmp_path, max_epochs=2, resume=True)
    assert runner.train_loop.epoch == 2
    assert (tmp_path / 'epoch_2.pth').exists()


def test_mmengine_checkpoint_resumes_under_weights_only(tmp_path, monkeypatch):
    """A plain torch.load (as third-party code calls it) works too."""
    if not safe_globals_accept_names():
        pytest.skip('torch < 2.6 cannot allow-list mmengine\'s types by name')
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


def test_safe_getattr_allows_only_history_buffer_methods(tmp_path, load_path):
    path = tmp_path / 'smuggle.pth'
    torch.save(dict(x=HistoryBufferSmuggler(tmp_path / 'ran')), path)
    with pytest.raises(UnsafeCheckpointError):
        safe_load(str(path))


# Every way a config or a tool reads a checkpoint through mmengine, with the
# variable users set when mmengine cannot resume its own checkpoints.


def _load_with_load_checkpoint(path: Path, work_dir: Path) -> None:
    # load_from, tools/test.py, visualisation (mmdet's init_detector)
    from mmengine.runner import load_checkpoint
    load_checkpoint(_Toy(), str(path), map_location='cpu')


def _load_with_pretrained_init(path: Path, work_dir: Path) -> None:
    from mmengine.model import PretrainedInit
    PretrainedInit(checkpoint=str(path))(_Toy())


def _load_with_runner_load_from(path: Path, work_dir: Path) -> None:
    _toy_runner(work_dir, load_from=str(path), resume=False).load_or_resume()


def _load_with_runner_resume(path: Path, work_dir: Path) -> None:
    _toy_runner(work_dir, load_from=str(path), resume=True).load_or_resume()


def _load_with_runner_auto_resume(path: Path, work_dir: Path) -> None:
    # resume=True without load_from: the work dir's last_checkpoint
    work_dir.mkdir(exist_ok=True)
    shutil.copy(path, work_dir / path.name)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / path.name))
    _toy_runner(work_dir, load_from=None, resume=True).load_or_resume()


def _load_with_convert_weights(path: Path, work_dir: Path) -> None:
    tool = _tool('convert_weights')
    tool.main(['--from', 'torchvision', str(path), str(work_dir / 'o.pth')])


def _load_with_van2mmsa(path: Path, work_dir: Path) -> None:
    _tool('van2mmsa').main([str(path), str(work_dir / 'o.pth')])


def _tool(name: str):
    from importlib.util import module_from_spec, spec_from_file_location
    spec = spec_from_file_location(
        name, MMSA.parent / 'tools' / 'model_converters' / f'{name}.py')
    tool = module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def _toy_runner(work_dir: Path, load_from, resume: bool):
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class ToyModel(BaseModel):

        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, inputs, targets=None, mode='loss'):
            return dict(loss=self.fc(inputs).sum())

    return Runner(model=ToyModel(),
                  work_dir=str(work_dir),
                  train_dataloader=dict(
                      dataset=[dict(inputs=torch.zeros(2))],
                      batch_size=1,
                      collate_fn=dict(type='default_collate'),
                      sampler=dict(type='DefaultSampler', shuffle=False)),
                  optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
                  train_cfg=dict(by_epoch=True, max_epochs=1),
                  load_from=load_from,
                  resume=resume)


ENTRY_POINTS = [
    _load_with_load_checkpoint, _load_with_pretrained_init,
    _load_with_runner_load_from, _load_with_runner_resume,
    _load_with_runner_auto_resume, _load_with_convert_weights,
    _load_with_van2mmsa
]


@pytest.mark.parametrize('load', ENTRY_POINTS, ids=lambda f: f.__name__[11:])
@pytest.mark.parametrize('forced', ['unset', 'no_weights_only'])
def test_payload_never_runs_through_any_checkpoint_entry_point(
        tmp_path, monkeypatch, load, forced):
    if load is _load_with_convert_weights:
        pytest.importorskip('mmdet')
    if forced == 'no_weights_only':
        monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    path, marker = evil_checkpoint(tmp_path)
    with pytest.raises((UnsafeCheckpointError, SystemExit)) as err:
        load(path, tmp_path / 'work')
    assert not marker.exists()
    assert f'Refusing to load {path.parent}' in str(err.value)
    assert f'{path.name}: it holds more than tensors' in str(err.value)


@pytest.mark.parametrize('load', ENTRY_POINTS, ids=lambda f: f.__name__[11:])
def test_truncated_checkpoint_gives_mmsa_message_at_every_entry_point(
        tmp_path, load):
    if load is _load_with_convert_weights:
        pytest.importorskip('mmdet')
    whole = tmp_path / 'whole.pth'
    torch.save(dict(state_dict=_Toy().state_dict()), whole)
    path = tmp_path / 'cut.pth'
    path.write_bytes(whole.read_bytes()[:200])
    with pytest.raises((UnreadableCheckpointError, SystemExit)) as err:
        load(path, tmp_path / 'work')
    msg = str(err.value)
    assert f'cannot load checkpoint {path.parent}' in msg
    assert f'{path.name}: it is truncated or corrupt' in msg


@pytest.mark.parametrize('url', [
    'https://download.example.org/ckpt/evil.pth',
    'open-mmlab://resnet50_v1c',
])
def test_downloaded_checkpoint_loads_weights_only(tmp_path, monkeypatch, url):
    from mmengine.runner.checkpoint import CheckpointLoader
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    monkeypatch.setenv('TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD', '1')
    path, marker = evil_checkpoint(tmp_path)
    fetched = []

    def download(src, dst, *args, **kwargs):
        fetched.append(src)
        shutil.copy(path, dst)

    monkeypatch.setattr(torch.hub, 'download_url_to_file', download)
    with pytest.raises(UnsafeCheckpointError, match='Refusing to load'):
        CheckpointLoader.load_checkpoint(url, map_location='cpu')
    assert not marker.exists() and len(fetched) == 1


def test_every_mmengine_checkpoint_scheme_reads_through_mmsa():
    from mmengine.runner.checkpoint import CheckpointLoader
    schemes = CheckpointLoader._schemes
    assert len(schemes) >= 11  # mmengine 0.10.7 has 11 prefixes
    unsafe = {
        p: f.__module__
        for p, f in schemes.items()
        if f.__module__ != checkpoint_module.__name__
    }
    assert not unsafe, f'schemes still read by mmengine: {unsafe}'
