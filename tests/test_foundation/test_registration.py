"""``import mmsa`` registers everything; one framework alone is enough."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ATTENTION_NAMES = ('SA', 'SE', 'ECA', 'CBAM', 'SGE', 'BAM', 'ULSAM', 'LKA',
                   'GC', 'NonLocal')


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (registration is import-time)."""
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)],
                          cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def check(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_version_is_exposed():
    import mmsa
    from mmsa.version import __version__
    assert mmsa.__version__ == __version__
    assert __version__.count('.') == 2


def test_import_leaves_triton_and_dynamo_unloaded():
    """Triton is imported by the first kernel that needs it: a shell's
    TRITON_INTERPRET=1 set later in the process (as the benchmark sets it)
    must still choose the interpreter, and a CPU-only user pays for
    neither import."""
    out = check(run_python('''
        import sys
        import torch
        import mmsa, mmsa.ops, mmsa.attention, mmsa.models
        # torch < 2.3 has no torch.compiler.is_compiling: mmsa.utils.compat
        # takes torch._dynamo's (whose import does not load triton there)
        new = hasattr(torch.compiler, 'is_compiling')
        print(sorted(m for m in ('triton', 'torch._dynamo')
                     if m in sys.modules and (new or m == 'triton')))
    '''))
    assert out.strip() == '[]'


def test_import_registers_in_root_and_framework_registries():
    out = check(run_python(f'''
        from mmengine.registry import MODELS
        names = {ATTENTION_NAMES!r} + ('AttnResNet', 'AttnResNetV1c',
                                       'AttnNeck')
        assert not any(MODELS.get(n) for n in ('SA', 'AttnResNet'))
        import mmsa
        from mmdet.registry import MODELS as DET
        from mmseg.registry import MODELS as SEG
        for n in names:
            cls = MODELS.get(n)
            assert cls is not None, n
            # child registries fall back to mmengine's root
            assert DET.get(n) is cls and SEG.get(n) is cls, n
        print('ok')
    '''))
    assert out.strip() == 'ok'


def test_custom_imports_in_a_config_registers_mmsa(tmp_path):
    cfg = tmp_path / 'sa_backbone.py'
    cfg.write_text(textwrap.dedent('''
        custom_imports = dict(imports=['mmsa'], allow_failed_imports=False)
        model = dict(type='AttnResNet', depth=18,
                     attention=dict(type='SE', reduction=4))
    '''))
    out = check(run_python(f'''
        import sys
        from mmengine.config import Config
        from mmengine.registry import MODELS
        assert 'mmsa' not in sys.modules
        cfg = Config.fromfile({str(cfg)!r})
        model = MODELS.build(cfg.model)
        print(type(model).__name__, model.attention_summary())
    '''))
    assert out.strip() == "AttnResNet {'se': 8}"


BLOCK = '''
    import sys
    sys.modules[{missing!r}] = None  # as if it were not installed
    import mmsa
    from mmengine.registry import MODELS
    assert not mmsa.models.AVAILABLE[{missing!r}]
    assert mmsa.models.AVAILABLE[{present!r}]
    MODELS.build(dict(type={works!r}, depth=18))
    try:
        MODELS.build(dict(type={fails!r}, depth=18))
    except ImportError as err:
        print(err)
'''


@pytest.mark.parametrize('missing,present,works,fails,package,extra', [
    ('mmseg', 'mmdet', 'AttnResNet', 'AttnResNetV1c', 'mmsegmentation',
     'seg'),
    ('mmdet', 'mmseg', 'AttnResNetV1c', 'AttnResNet', 'mmdet', 'det'),
])
def test_only_one_framework_installed(missing, present, works, fails,
                                      package, extra):
    out = check(run_python(BLOCK.format(**locals())))
    assert f'{fails} needs {package}, which could not be imported' in out
    assert f"pip install 'mmsa[{extra}]'" in out


def test_stack_imports_together():
    out = check(run_python('''
        import mmsa, mmdet, mmseg, mmcv, mmcv.ops, mmengine, torch
        print(mmcv.__version__, mmdet.__version__, mmseg.__version__)
    '''))
    mmcv_version, mmdet_version, mmseg_version = out.split()
    assert mmcv_version.startswith('2.1.')
    assert mmdet_version.startswith('3.') and mmseg_version.startswith('1.')


def test_unknown_type_in_root_registry_lists_attentions_and_suggests():
    import mmsa  # noqa: F401
    from mmdet.registry import MODELS as DET
    from mmengine.registry import MODELS, DefaultScope

    with pytest.raises(KeyError) as err:
        MODELS.build(dict(type='SAX'))
    message = str(err.value)
    assert message.startswith('SAX is not in the mmengine::model registry.')
    assert "Did you mean 'SA'?" in message
    listed = message.split('Attention types (mmsa): ')[1].split(', e.g.')[0]
    assert set(listed.split(', ')) == set(ATTENTION_NAMES)
    # the frameworks' registries explain too, and suggest their own names
    with pytest.raises(KeyError, match="Did you mean 'AttnResNet'"):
        DET.build(dict(type='AttnResnet', depth=18))
    with DefaultScope.overwrite_default_scope('mmdet'):
        with pytest.raises(KeyError, match="Did you mean 'FPN'"):
            MODELS.build(dict(type='FPNN'))
        # lookups through them still work, under either registry
        neck = MODELS.build(dict(type='FPN', in_channels=[8, 16],
                                 out_channels=8, num_outs=2))
    assert type(neck).__name__ == 'FPN'
    assert type(DET.build(dict(type='AttnResNet', depth=18))).__name__ == \
        'AttnResNet'
    # a KeyError raised inside a known type's constructor is left as it is
    with pytest.raises(KeyError, match='invalid depth 42') as err:
        MODELS.build(dict(type='AttnResNet', depth=42))
    assert 'Did you mean' not in str(err.value)
