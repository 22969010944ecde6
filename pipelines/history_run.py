"""``semsim batch --history H``: open the store before the pipeline is built (check it, lock it, read its centroids)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import numpy as np

from pipelines.options import BatchDedupOptions, OptionsError
from semsim_core.embedder import model_identity
from semsim_core.history import History, HistoryError, Manifest, check_compatible, new_segment_id
from semsim_core.keep import EARLIEST
from transforms.history_commit import CommitPlan


@dataclass(frozen=True)
class HistoryRun:
    """A run's view of its store: what the commit needs, and what the search reads."""

    plan: CommitPlan
    centroids: np.ndarray | None  # the store's; None when the run creates the store (and trains them)
    dim: int
    dtype: str
    margin: float | None  # the store's; None when the run creates the store (and tunes it, unless --cell-margin)
    records_before: int
    seen: dt.datetime  # the event time of this run's records


def open_history(opts: BatchDedupOptions) -> HistoryRun:
    """Check ``--history`` against this run (model, fingerprint, dimension, every committed file) and lock it for
    this run; any problem is one :class:`OptionsError` line and leaves the store as it was."""
    history = History(opts.history)
    owner = f"semsim batch {uuid.uuid4().hex[:12]} -> {opts.output}"
    try:
        fingerprint, dim = model_identity(opts.model)
        manifest = history.manifest() if history.exists() else None
        if manifest is None:
            created = Manifest(  # cells, centroids and margin: the run's partition, at the commit
                opts.model, fingerprint, dim, opts.history_dtype or "float32", 0.0, "", 0, keep=opts.keep_policy()
            )
            centroids, margin, dtype, before = None, None, created.dtype, 0
        else:
            check_compatible(manifest, opts.model, fingerprint, dim, root=opts.history)
            history.verify(manifest)
            _adopt_keep(opts, manifest)
            if opts.history_dtype and opts.history_dtype != manifest.dtype:
                raise OptionsError(
                    f"history {opts.history} keeps {manifest.dtype} embeddings; --history-dtype {opts.history_dtype} "
                    "sets that for a new store only (omit it, or start a new store)"
                )
            if opts.centroids:
                raise OptionsError(
                    f"--centroids cannot be given with an existing --history {opts.history}: its own centroids are used"
                )
            created, centroids = None, history.centroids(manifest)
            margin, dtype = manifest.margin, manifest.dtype
            before = sum(segment.rows for segment in manifest.segments)
        history.lock(owner)
    except HistoryError as e:
        raise OptionsError(str(e)) from None
    plan = CommitPlan(opts.history, new_segment_id(), owner, opts.output, manifest, created)
    return HistoryRun(plan, centroids, dim, dtype, margin, before, dt.datetime.now(dt.UTC))


def _adopt_keep(opts: BatchDedupOptions, manifest: Manifest) -> None:
    """The store keeps one policy for all its runs: without ``--keep`` a run takes the store's; another is refused."""
    opts.keep = opts.keep or manifest.keep
    if opts.keep != manifest.keep:
        raise OptionsError(
            f"history {opts.history} keeps the {manifest.keep} record of each cluster; --keep {opts.keep} would choose "
            "differently across days (omit --keep, or start a new store)"
        )
    if opts.keep == EARLIEST and not opts.time_field:
        raise OptionsError(f"history {opts.history} keeps the earliest record: give --time-field")


def release(run: HistoryRun) -> None:
    """Unlock the store after a run that failed in this process (a committed run has unlocked it already)."""
    History(run.plan.root).unlock(run.plan.owner)
