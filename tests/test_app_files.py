"""``fedstale.app_files``: the staged app folder ``flwr run`` is given builds
the same FAB as the app folder itself, without walking its ignored folders."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from flwr.cli.build import build_fab_from_disk
from flwr.cli.utils import collect_files, filter_paths_for_publish

from fedstale.app_files import fab_files, stage_app
from tests.helpers import PROBE_PYPROJECT, ROOT

PYPROJECT = PROBE_PYPROJECT.format(version="1.0.0")


def _write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def _flowers_own(app: Path) -> dict[str, Path]:
    return filter_paths_for_publish(collect_files(app.resolve()))


def test_the_staged_checkout_builds_the_same_fab_byte_for_byte(tmp_path):
    staged = stage_app(ROOT, tmp_path)
    assert staged.parent == tmp_path and staged.name.startswith("app-")
    ours, theirs = build_fab_from_disk(staged), build_fab_from_disk(ROOT)
    assert hashlib.sha256(ours).hexdigest() == hashlib.sha256(theirs).hexdigest()
    # and the staged folder holds only what Flower's filter keeps
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == sorted(
        fab_files(ROOT)
    )


def test_ignored_folders_are_not_entered_and_the_same_files_are_kept(tmp_path):
    app = tmp_path / "app"
    _write(
        app,
        {
            "pyproject.toml": PYPROJECT,
            ".gitignore": "results/\n*.log\nbuild\n",
            "probe/__init__.py": "",
            "probe/server.py": "app = None\n",
            "probe/conf.yaml": "a: 1\n",
            "probe/__pycache__/server.cpython-311.py": "",
            "results/run/metrics.json": "{}",
            "build/lib/x.py": "",
            "notes.log": "",
            ".venv/lib/site.py": "",
            ".flwr/config.toml": "",
            "docs/guide.md": "# guide\n",
            "data.bin": "binary, not in the publish rules",
        },
    )
    os.symlink(app / "probe", app / "linked")
    (app / "linked.py").symlink_to(app / "probe" / "server.py")
    kept = fab_files(app)
    assert sorted(kept) == [".gitignore", "docs/guide.md", "probe/__init__.py", "probe/conf.yaml",
                            "probe/server.py", "pyproject.toml"]
    assert kept.keys() == _flowers_own(app).keys()
    assert build_fab_from_disk(stage_app(app, tmp_path / "staged")) == build_fab_from_disk(app)


def test_a_gitignore_re_include_is_honoured(tmp_path):
    """With a ``!`` rule the ``.gitignore`` cannot be used to skip folders, so
    ``docs/keep.md`` is found as Flower finds it."""
    app = tmp_path / "app"
    _write(
        app,
        {
            "pyproject.toml": PYPROJECT,
            ".gitignore": "docs/*\n!docs/keep.md\n",
            "probe/server.py": "",
            "docs/drop.md": "",
            "docs/keep.md": "",
        },
    )
    kept = fab_files(app)
    assert sorted(kept) == [".gitignore", "docs/keep.md", "probe/server.py", "pyproject.toml"]
    assert kept.keys() == _flowers_own(app).keys()


def test_a_big_ignored_folder_is_not_walked(tmp_path, monkeypatch):
    """2,000 files in ``.venv``: Flower's walk reads them all, ours none
    (the counts are the walk's, not its time, so the test cannot flake)."""
    app = tmp_path / "app"
    _write(app, {"pyproject.toml": PYPROJECT, "probe/server.py": ""})
    venv = app / ".venv" / "lib"
    venv.mkdir(parents=True)
    for i in range(20):
        folder = venv / f"pkg{i}"
        folder.mkdir()
        for j in range(100):
            (folder / f"m{j}.py").touch()
    walked: list[str] = []
    real_walk = os.walk

    def counting_walk(top, *args, **kwargs):
        for dirpath, dirnames, filenames in real_walk(top, *args, **kwargs):
            walked.extend(filenames)
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(os, "walk", counting_walk)
    kept = fab_files(app)
    ours = len(walked)
    walked.clear()
    theirs = _flowers_own(app)
    assert kept.keys() == theirs.keys() == {"pyproject.toml", "probe/server.py"}
    assert ours == 2 and len(walked) == 2_002
