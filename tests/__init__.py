"""The test suite. Imported before its conftest, so the cores are shared out here, before any runtime sizes its
thread pools."""

import os


def _share_the_cores_between_test_workers() -> None:
    """Give each pytest-xdist worker its own share of the cores, inherited by the processes it starts: workers running
    side by side never put more inference threads than cores on the machine (oversubscribed, PyTorch runs several
    times slower), and each sizes its pools to its share as a worker process of its own would."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if worker and count > 1 and hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, cores[int(worker.removeprefix("gw")) :: count] or cores)


_share_the_cores_between_test_workers()
# As `semsim` sets them before transformers is imported (pipelines/cli.py), which in the tests happens first.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
