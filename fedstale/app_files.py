"""The files of a Flower app folder that go into its FAB, found without walking ignored folders.

``flwr run APP_DIR`` builds the app's FAB with ``flwr.cli.utils.collect_files``,
which lists and resolves *every* file under ``APP_DIR`` before Flower's own
filter (``.gitignore`` plus the publish include/exclude rules) drops most of
them. In fedstale's checkout with the README's in-tree ``.venv`` that is about
80,000 files for the ~220 that reach the FAB: about 6 CPU-seconds of each
``flwr run``, as much as the ServerApp of a short run. Flower has no option to
skip ignored folders, so fedstale's launchers (``fedstale run``, sweeps,
:class:`~fedstale.simulation.launcher.LocalFederation`,
:class:`~fedstale.deployment.LocalDeployment`) hand ``flwr run`` a staged
copy of only those files: Flower's own filter applied to a walk that does
not enter the folders that filter drops whole. Flower then builds the same
FAB, byte for byte (tested), from a folder of a few hundred files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from flwr.cli.utils import (
    build_pathspec,
    filter_paths_for_publish,
    load_gitignore_patterns,
)
from flwr.supercore.constant import APP_PUBLISH_EXCLUDE_PATTERNS

__all__ = ["fab_files", "stage_app"]


def fab_files(app_dir: str | Path) -> dict[str, Path]:
    """The files of ``app_dir`` Flower's FAB filter keeps, by POSIX path relative to it.

    The same files ``flwr.cli.utils.filter_paths_for_publish(collect_files(app_dir))``
    keeps, but a folder is not entered when Flower's exclude rules
    (``.venv/``, ``__pycache__/``, ``.flwr/``) match it as a folder, nor when
    the ``.gitignore`` does and has no ``!`` re-include.
    Symbolic links are skipped, as Flower skips them.
    """
    root = Path(app_dir).resolve()
    gitignore = root / ".gitignore"
    patterns = load_gitignore_patterns(gitignore) if gitignore.is_file() else []
    prune = [build_pathspec(APP_PUBLISH_EXCLUDE_PATTERNS)]
    if not any(p.startswith("!") for p in patterns):
        prune.append(build_pathspec(patterns))
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        folder = Path(dirpath)
        relative = folder.relative_to(root).as_posix()
        prefix = "" if relative == "." else relative + "/"
        dirnames[:] = [
            d
            for d in dirnames
            if not (folder / d).is_symlink()
            and not any(spec.match_file(f"{prefix}{d}/") for spec in prune)
        ]
        for name in filenames:
            path = folder / name
            if not path.is_symlink():
                files[prefix + name] = path
    return {k: v for k, v in filter_paths_for_publish(files).items() if isinstance(v, Path)}


def stage_app(app_dir: str | Path, under: str | Path) -> Path:
    """Copy the FAB's files of ``app_dir`` into a new folder under ``under``; return it.

    ``under`` is created if missing. ``flwr run`` on the returned folder
    builds the same FAB as ``flwr run app_dir``; the folder is needed only
    until ``flwr run`` has built it (its first second).
    """
    Path(under).mkdir(parents=True, exist_ok=True)
    target = Path(tempfile.mkdtemp(prefix="app-", dir=under))
    for relative, source in fab_files(app_dir).items():
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
    return target
