"""``--overwrite``: a run replacing the one in ``--output`` writes into a staging folder and moves in once it has
finished, so whatever kills it, the folder holds one whole run (the earlier one, or the new one once
``finish_promotions`` ends an interrupted move)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import pytest
from apache_beam.io.filesystems import FileSystems

from pipelines.cli import main
from pipelines.run_files import finish_promotions, promote, staged_runs, staging_folder
from semsim_core.run_layout import PROMOTING, STAGED_RUN_PREFIX, ReadSpec, Summary
from tests.conftest import REPO, sample_titles, write_jsonl
from tests.object_store import ObjectStore


def _summary(threshold: float) -> str:
    """A summary.json of a run without a history store (a promotion reads it to see whether the store took the run)."""
    read = ReadSpec(["in.jsonl"], None, "id", "text", 100_000)
    return Summary(threshold, "m", None, "torch", 0.0, "components", "FnApiRunner", read, {}).to_json().decode()


EARLIER = {
    "summary.json": _summary(0.7),
    "pairs/part-0.parquet": "earlier pairs",
    "clusters/part-0.parquet": "earlier clusters",
    "deduplicated/part-0.parquet": "earlier deduplicated",  # the new run has none: it must go
    "report.html": "earlier report",
}
NEW = {
    "summary.json": _summary(0.8),
    "pairs/part-0.parquet": "new pairs",
    "pairs/part-1.parquet": "new pairs 2",
    "clusters/part-0.parquet": "new clusters",
    "centroids.npy": "new centroids",
}
USERS = {"notes.txt": "the user's own file"}


@pytest.fixture(params=["local", "object store"])
def folders(request, tmp_path) -> Iterator[Callable[[str], str]]:
    """Names of folders for runs: local, or on an object store (no folders, renames object by object)."""
    if request.param == "local":
        yield lambda name: str(tmp_path / name)
        return
    yield lambda name: f"objects://bucket/{tmp_path.name}/{name}"
    ObjectStore.objects.clear()


def _write(folder: str, files: dict[str, str]) -> None:
    for name, text in files.items():
        with FileSystems.create(FileSystems.join(folder, name)) as f:
            f.write(text.encode())


def _files(folder: str) -> dict[str, str]:
    found = {}
    for match in FileSystems.match([FileSystems.join(folder, "**")])[0].metadata_list:
        with FileSystems.open(match.path) as f:
            found[match.path[len(folder) + 1 :]] = f.read().decode()
    return found


def _visible(folder: str) -> dict[str, str]:
    """What a reader of the folder sees: every file outside the staging folders."""
    return {name: text for name, text in _files(folder).items() if not name.startswith(STAGED_RUN_PREFIX)}


def _prepare(folder: str) -> str:
    _write(folder, {**EARLIER, **USERS})
    staging = staging_folder(folder)
    _write(staging, {**NEW, "_work/vectors.npy": "new work"})
    return staging


def _failing_after(calls: int, monkeypatch) -> None:
    """Make the ``calls + 1``-th rename or delete of Beam's FileSystems raise, as a crash there would stop it."""
    done = [0]
    for name in ("rename", "delete"):
        real = getattr(FileSystems, name)

        def failing(*args, _real=real):
            if done[0] == calls:
                raise OSError("killed here")
            done[0] += 1
            return _real(*args)

        monkeypatch.setattr(FileSystems, name, failing)


def test_a_promotion_interrupted_anywhere_leaves_one_whole_run(folders, monkeypatch):
    earlier, new = {**EARLIER, **USERS}, {**NEW, **USERS}
    steps = 0
    while True:
        folder = folders(f"out-{steps}")
        staging = _prepare(folder)
        with monkeypatch.context() as patched:
            _failing_after(steps, patched)
            try:
                promote(staging, folder)
                finished = True
            except OSError:
                finished = False
        seen = _visible(folder)
        if "summary.json" in seen:  # the success marker stands over one run, never a mix
            assert seen in (earlier, new), f"after {steps} steps: {sorted(seen)}"
        else:  # mid-move: the new run is whole in its staging folder, and finishing moves it in
            assert staged_runs(folder), f"after {steps} steps: no summary and no staged run"
        finish_promotions(folder, discard_unfinished=False)
        assert _files(folder) == new, f"interrupted after {steps} steps"
        if finished:
            break
        steps += 1
    assert steps > 8  # every deletion and rename was a place to stop


def test_a_killed_replacing_run_leaves_the_earlier_run_and_is_discarded_by_the_next(tmp_path, capsys):
    out = tmp_path / "out"
    flags = ["--output", str(out), "--backend", "onnx", "--progress-seconds", "0"]
    assert main(["batch", "--input", str(write_jsonl(tmp_path / "a.jsonl", sample_titles(40))), *flags]) == 0
    assert main(["report", str(out)]) == 0
    before = _bytes(out)

    newer = write_jsonl(tmp_path / "b.jsonl", sample_titles(400)[200:])
    command = [sys.executable, "-m", "pipelines.batch_dedup", "--input", str(newer), *flags, "--overwrite"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        if any(p.is_file() and "/_work/" not in str(p) for p in out.glob(f"{STAGED_RUN_PREFIX}*/**/*")):
            break  # the run has written one of its outputs
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it wrote an output"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _bytes(out) == before, "the earlier run is untouched"
    assert staged_runs(str(out)), "the killed run's staging folder"
    capsys.readouterr()
    assert main(["report", str(out)]) == 0, "the earlier run still reads"

    assert main(["batch", "--input", str(newer), *flags, "--overwrite"]) == 0
    assert not staged_runs(str(out)), "the killed run's files went with the next run"
    assert len(pd.read_parquet(out / "clusters")) == 200
    assert not (out / "report.html").exists()


def _bytes(folder: Path) -> dict[str, bytes]:
    """The files a reader of ``folder`` sees (outside the staging folders), with their contents."""
    files = (
        p for p in folder.rglob("*") if p.is_file() and not p.relative_to(folder).parts[0].startswith(STAGED_RUN_PREFIX)
    )
    return {str(p.relative_to(folder)): p.read_bytes() for p in files}


@pytest.mark.parametrize("finished", [True, False])
def test_a_run_launched_after_a_killed_one_finishes_or_leaves_its_staging(folders, finished):
    """A finished staged run (killed while moving in) is moved in by the next launch, with or without --overwrite;
    an unfinished one is deleted only by a run that replaces the folder."""
    folder = folders("out")
    staging = _prepare(folder)
    if not finished:
        FileSystems.delete([FileSystems.join(staging, "summary.json")])
    finish_promotions(folder, discard_unfinished=False)
    assert _visible(folder) == ({**NEW, **USERS} if finished else {**EARLIER, **USERS})
    assert staged_runs(folder) == ([] if finished else [staging])
    finish_promotions(folder, discard_unfinished=True)
    assert not staged_runs(folder) and _visible(folder) == _files(folder)


def test_a_report_on_a_run_killed_while_moving_in_says_what_finishes_it(tmp_path, monkeypatch, capsys):
    folder = str(tmp_path / "out")
    staging = _prepare(folder)
    with monkeypatch.context() as patched, pytest.raises(OSError):
        _failing_after(1, patched)  # the earlier summary is gone, the staged one not yet marked as moving in
        promote(staging, folder)
    assert main(["report", folder]) == 2
    # with --history a staged summary stands for a finished run only once its segment is committed: the next run checks
    expected = f"stopped before it was moved in; the next `semsim batch` with --output {folder} moves it in if"
    assert expected in capsys.readouterr().err
    FileSystems.rename([FileSystems.join(staging, "summary.json")], [FileSystems.join(staging, PROMOTING)])
    assert main(["report", folder]) == 2
    expected = f"stopped while moving in; the next `semsim batch` with --output {folder} finishes"
    assert expected in capsys.readouterr().err
    FileSystems.delete([FileSystems.join(staging, PROMOTING)])  # a replacing run that never finished
    assert main(["report", folder]) == 2
    assert "moving in" not in capsys.readouterr().err, "nothing to move in"
