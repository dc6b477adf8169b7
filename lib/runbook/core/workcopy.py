"""Per-operator working copies of the notebooks, for JupyterLab (`scripts/lab.sh`).

JupyterLab autosaves: serving the tracked notebooks/ would write one
operator's outputs and edited parameters cell (`env = "production"`) into the
files the next person opens and that `runbook run` executes. So lab.sh serves
a working copy per operator instead: `$LAB_ROOT` if set, else
`~/.local/share/dealix-runbook/lab/<user>/` (`$XDG_DATA_HOME` respected),
copied fresh from notebooks/ on every start with outputs, execution counts
and papermill metadata stripped. A copy the operator changed is not lost:
it moves to `.previous/<UTC time>/` in the same folder first. Other files
in the folder are left alone.

    python -m runbook.core.workcopy            # prepare, print the folder
    python -m runbook.core.workcopy --root DIR

Example::

    >>> from tempfile import mkdtemp
    >>> root = Path(mkdtemp())
    >>> made = prepare(root)
    >>> sorted(p.name for p in made.copies)[:2]
    ['database_down.ipynb', 'deploy.ipynb']
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runbook.clock import utc_now
from runbook.core.paths import notebooks_dir

PREVIOUS = ".previous"


def default_root() -> Path:
    """`$LAB_ROOT`, else the operator's own folder under the XDG data home."""
    env = os.environ.get("LAB_ROOT")
    if env:
        return Path(env).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    try:
        user = getpass.getuser()
    except Exception:
        user = "operator"
    return Path(data) / "dealix-runbook" / "lab" / user


def stripped(notebook: dict[str, Any]) -> dict[str, Any]:
    """The notebook without outputs, execution counts or papermill metadata.

    >>> nb = {"cells": [{"cell_type": "code", "source": "1", "outputs": [{"x": 1}],
    ...        "execution_count": 3, "metadata": {"papermill": {}, "tags": ["t"]}}],
    ...       "metadata": {"papermill": {"a": 1}, "kernelspec": {"name": "k"}}}
    >>> s = stripped(nb)
    >>> s["cells"][0]["outputs"], s["cells"][0]["execution_count"], s["cells"][0]["metadata"]
    ([], None, {'tags': ['t']})
    >>> s["metadata"]
    {'kernelspec': {'name': 'k'}}
    """
    nb = json.loads(json.dumps(notebook))
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        cell.get("metadata", {}).pop("papermill", None)
        cell.get("metadata", {}).pop("execution", None)
        if cell.get("cell_type") == "code":
            cell["outputs"] = []
            cell["execution_count"] = None
    return nb


@dataclass
class Prepared:
    """What `prepare` did: the fresh copies and the changed ones it moved aside."""

    root: Path
    copies: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)


def prepare(root: Path, source: Path | None = None) -> Prepared:
    """Copy every tracked notebook fresh (outputs stripped) into `root`; returns what it did.

    A copy in `root` that differs from the fresh one (the operator's edits or
    outputs) is moved to `root/.previous/<UTC>/` first. The tracked notebooks
    are only read.
    """
    source = source or notebooks_dir()
    root = root.expanduser().resolve()
    if root == source.resolve():
        raise ValueError(
            f"the working copies cannot be the tracked notebooks ({source}): set LAB_ROOT to "
            "another folder, or leave it unset for ~/.local/share/dealix-runbook/lab/<user>/"
        )
    root.mkdir(parents=True, exist_ok=True)
    done = Prepared(root)
    stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
    for tracked in sorted(source.glob("*.ipynb")):
        # as nbformat writes it, so an untouched copy compares equal next time
        nb = stripped(json.loads(tracked.read_text()))
        fresh = json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
        dest = root / tracked.name
        if dest.exists() and dest.read_text() != fresh:
            aside = root / PREVIOUS / stamp / tracked.name
            aside.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(dest), aside)
            done.kept.append(aside)
        dest.write_text(fresh)
        done.copies.append(dest)
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runbook.core.workcopy", description=__doc__)
    parser.add_argument("--root", type=Path, default=None, help="default: $LAB_ROOT or XDG")
    args = parser.parse_args(argv)
    done = prepare(args.root or default_root())
    print(f"lab: your working copies of the notebooks are in {done.root}")
    print(
        "lab: copied fresh from notebooks/ with outputs stripped; the tracked notebooks are "
        "never served, so your edits and outputs stay in your copy"
    )
    if done.kept:
        print(f"lab: your changed copies from last time are in {done.kept[0].parent}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
