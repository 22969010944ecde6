"""The package workers install (``--setup_file`` builds this sdist): it installs into a fresh virtualenv and runs
``semsim batch`` there, reading nothing from the repository checkout and importing nothing of the test extra."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
from pathlib import Path

from tests.conftest import REPO, sample_titles, write_jsonl

WHERE = (
    "import importlib.resources, importlib.util, pipelines, semsim_core, transforms; "
    "print(pipelines.__file__, transforms.__file__, semsim_core.__file__, "
    "*(importlib.resources.files('semsim_core').joinpath(f).is_file() "
    "for f in ('int8_calibration_texts.txt', 'backend_probe_pairs.tsv')), "
    "not any(importlib.util.find_spec(p) for p in ('pandas', 'matplotlib')))"
)

TEST_ONLY = ("pandas", "matplotlib")  # what the workers' install must run without


def test_sdist_installs_into_a_fresh_venv_and_runs_batch(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(dist)],
        cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    (sdist,) = dist.glob("semsim-*.tar.gz")
    with tarfile.open(sdist) as tar:
        top = {name.split("/")[1] for name in tar.getnames() if name.count("/")}
    assert {"pipelines", "transforms", "semsim_core", "LICENSE"} <= top and "tests" not in top, top

    fresh = tmp_path / "fresh"
    venv.create(fresh, with_pip=True)
    python = fresh / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    # The dependencies come from this environment's site-packages, less the test-only packages (linked into a
    # folder appended after the fresh venv's own, and without running its .pth files, so its editable semsim stays
    # out); semsim itself only from the sdist.
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(TEST_ONLY):
            (deps / entry.name).symlink_to(entry)
    (fresh / site.split(str(fresh) + "/", 1)[1] / "deps.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # pip builds the sdist into a wheel with this environment's setuptools, as a worker's pip would from PyPI.
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(dist), sdist]
    subprocess.run(build, cwd=tmp_path, env=env, check=True, capture_output=True)
    (wheel,) = dist.glob("semsim-*.whl")
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, cwd=tmp_path, env=env, check=True, capture_output=True)

    where = subprocess.run([python, "-c", WHERE], cwd=tmp_path, env=env, check=True, capture_output=True, text=True)
    *files, calibration, probe, without_test_only = where.stdout.split()
    assert all(f.startswith(site) for f in files), files
    assert calibration == probe == "True"  # package data: int8 calibration texts, auto's probe
    assert without_test_only == "True"

    data = write_jsonl(tmp_path / "titles.jsonl", sample_titles(60))
    semsim = [fresh / "bin" / "semsim", "batch", "--input", str(data), "--output", str(tmp_path / "out")]
    run = subprocess.run([*semsim, "--backend", "torch"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert '"inputs": 60' in run.stdout
    assert (tmp_path / "out" / "clusters").is_dir()
