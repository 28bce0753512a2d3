"""The package as users get it: metadata, manifest, data files, imports, docs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

import napari_vmunet

ROOT = Path(__file__).resolve().parents[1]


def test_one_version_everywhere():
    version = napari_vmunet.__version__
    assert re.fullmatch(r'\d+\.\d+\.\d+', version)
    assert f'version: {version}' in (ROOT / 'CITATION.cff').read_text()
    changelog = (ROOT / 'CHANGELOG.md').read_text()
    # the newest released section (an "Unreleased" one may come first)
    assert re.search(r'^## (?!Unreleased\b)(\S+)', changelog, re.M).group(1) == version
    from importlib.metadata import version as dist_version

    assert dist_version('napari-vmunet') == version


def test_the_manifest_is_valid_and_its_commands_import():
    from npe2 import PluginManifest

    manifest = PluginManifest.from_distribution('napari-vmunet')
    manifest.validate_imports()
    assert set(manifest.categories) == {'Segmentation', 'Annotation'}
    widgets = {w.display_name for w in manifest.contributions.widgets}
    assert widgets == {'Inference', 'Fine-tune'}
    assert {s.key for s in manifest.contributions.sample_data} == {'nuclei', 'brain'}


def test_installed_package_carries_its_data():
    data = resources.files('napari_vmunet') / 'data'
    names = {p.name for p in data.iterdir()}
    for needed in (
        'nuclei_image.tif',
        'nuclei_labels.tif',
        'brain_t1.nii.gz',
        'brain_tissue_labels.nii.gz',
        'demo-nuclei.safetensors',
        'demo-brain.safetensors',
    ):
        assert needed in names
    assert (resources.files('napari_vmunet') / 'napari.yaml').is_file()
    from napari_vmunet.zoo import builtin_checkpoints

    assert set(builtin_checkpoints()) == {'demo-nuclei', 'demo-brain'}
    for path in builtin_checkpoints().values():
        assert path.stat().st_size < 6 * 2**20  # "a few MB"


def run_python(code: str) -> str:
    return subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    ).stdout


def test_importing_the_package_is_cheap_and_the_core_knows_no_qt():
    assert (
        run_python('import sys, napari_vmunet; print("torch" in sys.modules)').strip()
        == 'False'
    )
    loaded = run_python(
        'import sys\n'
        'import napari_vmunet.model, napari_vmunet.checkpoint, napari_vmunet.io\n'
        'import napari_vmunet.inference, napari_vmunet.training, napari_vmunet.cli\n'
        'import napari_vmunet.training.ddp, napari_vmunet.cli.predict\n'
        'print(sorted(m for m in sys.modules if m.split(".")[0] in '
        '("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui")))'
    )
    assert loaded.strip() == '[]'


def test_readme_starts_with_the_two_quick_start_commands():
    text = (ROOT / 'README.md').read_text()
    block = re.search(r'```bash\n(.*?)```', text, re.S).group(1).strip().splitlines()
    assert len(block) == 2
    assert 'napari-vmunet demo' in block[0]
    assert 'scripts/setup.sh --test' in block[1] and 'pytest' in block[1]
    # .ci/run runs exactly that test command
    ci = subprocess.run(
        ['bash', '-c', 'grep -m1 "scripts/setup.sh --test" README.md'],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout
    assert ci.strip().startswith(block[1].split('#')[0].strip())
    for image in re.findall(
        r'raw\.githubusercontent\.com/[^/]+/[^/]+/main/([^)]+)', text
    ):
        assert (ROOT / image).is_file(), image


def test_documentation_site_builds_strictly(tmp_path):
    pytest.importorskip('mkdocs')
    proc = subprocess.run(
        [
            sys.executable,
            '-m',
            'mkdocs',
            'build',
            '--strict',
            '--site-dir',
            str(tmp_path / 'site'),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, 'NO_MKDOCS_2_WARNING': '1'},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / 'site' / 'api' / 'index.html').is_file()


@pytest.mark.slow
def test_sdist_and_wheel_carry_what_runs_and_nothing_else(tmp_path):
    pytest.importorskip('build')
    subprocess.run(
        [
            sys.executable,
            '-m',
            'build',
            '--sdist',
            '--wheel',
            '--outdir',
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob('*.whl'))
    sdist = next(tmp_path.glob('*.tar.gz'))
    import tarfile
    import zipfile

    with zipfile.ZipFile(wheel) as zf, tarfile.open(sdist) as tf:
        in_wheel, in_sdist = zf.namelist(), tf.getnames()
    for needed in (
        'napari_vmunet/napari.yaml',
        'napari_vmunet/data/demo-nuclei.safetensors',
        'napari_vmunet/data/demo-brain.safetensors',
        'napari_vmunet/data/nuclei_image.tif',
        'napari_vmunet/data/brain_t1.nii.gz',
        'napari_vmunet/data/README.md',
    ):
        assert needed in in_wheel, needed
        assert any(name.endswith(needed) for name in in_sdist), needed
    for unwanted in ('tests/', 'benchmarks/', 'docs/', 'scripts/'):
        assert not any(unwanted in name for name in in_wheel), unwanted
        assert not any(f'/{unwanted}' in name for name in in_sdist), unwanted
    check = subprocess.run(
        [sys.executable, '-m', 'twine', 'check', '--strict', str(wheel), str(sdist)],
        capture_output=True,
        text=True,
    )
    assert check.returncode == 0, check.stdout + check.stderr


#: imported only where an extra, the napari front end or the user provides
#: them, each behind a guard that says what to install
OPTIONAL_IMPORTS = {
    'napari',  # the front end runs inside napari (never a dependency)
    'triton',  # the GPU scan, on CUDA only
    'mamba_ssm',  # the [cuda] extra
    'bioimageio',  # the [bioimageio] extra (export)
    'pydantic',  # the same extra
    'pandas',  # Table.to_pandas(), for users who have it
}


def _third_party_imports() -> set[str]:
    import ast

    names = set()
    for path in (ROOT / 'src' / 'napari_vmunet').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split('.')[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split('.')[0])
    return {n for n in names if n not in sys.stdlib_module_names} - {'napari_vmunet'}


def test_declared_dependencies_are_exactly_the_imported_ones():
    """Issue #15: psygnal was imported but not declared, magicgui declared
    but never imported."""
    from importlib.metadata import packages_distributions, requires

    def canonical(name: str) -> str:
        return re.sub(r'[-_.]+', '-', name).lower()

    declared = {
        canonical(re.match(r'[A-Za-z0-9_.\-]+', r).group())
        for r in requires('napari-vmunet')
        if 'extra ==' not in r
    }
    distributions = packages_distributions()
    imported = set()
    for module in _third_party_imports() - OPTIONAL_IMPORTS:
        assert module in distributions, f'{module} is imported but not installed'
        imported |= {canonical(d) for d in distributions[module]}
    assert imported - declared == set(), 'imported but not declared'
    assert declared - imported == set(), 'declared but never imported'
