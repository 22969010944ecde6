"""Embedding speed per backend, raw and inside ``semsim batch``; what ``--backend auto`` chooses here; ``auto`` with
rescoring against fp32 end to end; and ``semsim batch`` vs sentence-transformers' ``util.paraphrase_mining``. Every
ratio is measured in this one run, on the CPU printed first.

    python -m benchmarks.embed_throughput [--titles TITLES.tsv.gz] [-n 5000] [--backends torch onnx-int8 ...]
        [--mining 20000] [--skip-mining]

Every time is the best of ``--repeat`` runs; a backend's raw and pipeline runs alternate. For each backend (and
``auto``): raw ``Embedder.encode`` of the titles (the backend built beforehand, so no export is timed), its ratio to
the baseline (plain ``SentenceTransformer.encode``, fp32, batch 32), its STS Benchmark test Spearman, its drift from
fp32 on auto's probe and whether auto's gate admits it, and ``semsim batch --backend B`` on the same titles: whole run
(incl. model load) and the encoding rate inside its DoFns (``embedded`` / ``encode_ms``) as a ratio to the raw
backend. "fresh/s" is the raw encode of a freshly loaded model (each pipeline run loads its own) and "paired" the
median ratio of each pipeline run's encoding rate to the fresh raw encode just before it: Beam's own overhead.

On ``--mining`` titles: ``semsim batch`` with auto (and rescoring) vs ``--backend torch`` (fp32), each a ``semsim``
child process as a user runs it (start-up and model load included, after one warm-up run): time ratio, and the
pairs of the auto run against the fp32 run's (recall, precision); the rescoring's cost is the chosen backend run with
the default band vs ``--rescore-band 0`` (alternating, best of ``--repeat`` each). Then each of
``--mining-backends`` vs ``paraphrase_mining`` (same model, top_k 100): time ratio and the share of
paraphrase_mining's pairs at or above the threshold that semsim finds (directly or through an exact group).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import pandas as pd

from benchmarks.measure import SEMSIM, faster, machine, run_child, share, timed
from benchmarks.titles import SAMPLE_TITLES, read_titles, write_titles
from pipelines.batch_dedup import counters, run
from pipelines.options import DEFAULT_THRESHOLD
from pipelines.run_files import read_summary
from semsim_core.backend_choice import choose_backend
from semsim_core.backends import AUTO, BACKENDS, CHOICES
from semsim_core.embedder import EmbedConfig, Embedder, default_threads
from semsim_core.evaluation import evaluate_stsb, read_stsb
from semsim_core.mining_eval import expand_exact_groups
from semsim_core.rescore import DEFAULT_RESCORE_BAND, ScoreBand
from semsim_core.run_layout import Summary

REPO = Path(__file__).resolve().parents[1]
STSB_TEST = REPO / "tests" / "data" / "stsbenchmark" / "sts-test.csv"
MAX_DRIFT = ScoreBand(DEFAULT_THRESHOLD, DEFAULT_RESCORE_BAND).max_drift


def run_batch(data: Path, out: Path, *flags: str) -> tuple[float, dict, dict]:
    """One ``semsim batch``: whole-run seconds, its summary and its counters."""
    (summary, result), seconds = timed(run, ["--input", str(data), "--output", str(out), *flags])
    return seconds, summary, counters(result)


def compare_backends(titles: list[str], backends: list[str], folder: Path, repeat: int) -> None:
    base = Embedder.load(backend="torch")
    choice = choose_backend(base.model, default_threads(), MAX_DRIFT)
    print(choice.describe())
    drift = {m.backend: m.drift for m in choice.measurements if m.error is None}
    skipped = {m.backend: m.error for m in choice.measurements if m.error}
    base.model.encode(titles[:64], batch_size=32)
    _, baseline_s = timed(base.model.encode, titles, repeat=repeat)
    baseline = len(titles) / baseline_s
    data = write_titles(folder, titles)
    print(f"baseline: SentenceTransformer.encode fp32, batch 32, {len(titles)} titles: {baseline:.1f} sentences/s")
    columns = ("backend", "raw/s", "vs base", "Spearman", "drift", "gate", "batch/s", "vs raw", "in-DoFn/s", "vs raw")
    widths = (22, 7, 7, 8, 6, 4, 7, 6, 9, 6, 7, 6)
    print(" ".join(f"{c:>{w}}" for c, w in zip((*columns, "fresh/s", "paired"), widths, strict=True)))
    in_dofn_rates = {}
    for backend in backends:
        if backend in skipped:
            print(f"{backend:>22} left out by auto here: {skipped[backend]}")
            continue
        embedder = Embedder(base.model, EmbedConfig(backend=backend))
        embedder.encode(titles[:64])
        spearman = evaluate_stsb(embedder, read_stsb(str(STSB_TEST))).spearman
        raw_rates, fresh_rates, run_rates, dofn_rates = [], [], [], []
        for attempt in range(repeat):  # raw and pipeline alternate, so the machine's drift weighs on both alike
            raw_rates.append(len(titles) / timed(embedder.encode, titles)[1])
            # Each pipeline run loads its model afresh, whose first batches run slower (kernels are created per
            # input shape); the raw encode of a fresh model measures that same work without Beam.
            fresh = Embedder(base.model, EmbedConfig(backend=backend))
            fresh_rates.append(len(titles) / timed(fresh.encode, titles)[1])
            seconds, _, measured = run_batch(data, folder / f"{backend}-{attempt}", "--backend", backend)
            run_rates.append(len(titles) / seconds)
            dofn_rates.append(measured["embedded"] / (measured["encode_ms"] / 1000))
        raw, whole, in_dofn, cold = max(raw_rates), max(run_rates), max(dofn_rates), max(fresh_rates)
        in_dofn_rates[backend] = in_dofn
        paired = statistics.median(d / f for d, f in zip(dofn_rates, fresh_rates, strict=True))
        name = f"auto ({embedder.backend})" if backend == AUTO else backend
        gated = drift.get(embedder.backend, float("inf")) <= MAX_DRIFT
        print(
            f"{name:>22} {raw:7.1f} {raw / baseline:6.2f}x {spearman:8.4f} {drift.get(embedder.backend, 0):6.4f} "
            f"{'yes' if gated else 'no':>4} {whole:7.1f} {whole / raw:5.2f}x {in_dofn:9.1f} {in_dofn / raw:5.2f}x "
            f"{cold:7.1f} {paired:5.2f}x"
        )
    gated = [b for b in in_dofn_rates if b != AUTO and drift.get(b, float("inf")) <= MAX_DRIFT]
    if AUTO in in_dofn_rates and gated:
        fastest = max(gated, key=in_dofn_rates.get)
        print(
            f"auto's encoding rate inside semsim batch: {in_dofn_rates[AUTO]:.1f}/s = "
            f"{in_dofn_rates[AUTO] / in_dofn_rates[fastest]:.3f}x the fastest gated backend's ({fastest}, "
            f"{in_dofn_rates[fastest]:.1f}/s)"
        )


def semsim_pairs(out: Path) -> set[tuple[str, str]]:
    """Every pair ``semsim batch`` reports, directly or through an exact group (see ``expand_exact_groups``)."""
    pairs = pd.read_parquet(out / "pairs", columns=["id_a", "id_b", "score", "kind"])
    return set(expand_exact_groups(pairs.itertuples(index=False, name=None)))


def child_batch(data: Path, out: Path, *flags: str) -> tuple[float, Summary, dict]:
    """One ``semsim batch`` as a child process, as a user runs it (start-up and model load included): wall seconds,
    its summary and the counters it prints."""
    seconds, _, stdout = run_child([SEMSIM, "batch", "--input", str(data), "--output", str(out), *flags])
    printed = next(line for line in stdout.splitlines() if line.startswith("counters: "))
    return seconds, read_summary(str(out)), json.loads(printed.removeprefix("counters: "))


def compare_auto_with_fp32(titles: list[str], folder: Path, repeat: int) -> None:
    """``semsim batch`` with auto and rescoring vs fp32 (``--backend torch``), each a child process: time, pairs, and
    what rescoring costs (the chosen backend with and without the band, runs alternating, best of ``repeat`` each)."""
    data = write_titles(folder, titles)
    child_batch(data, folder / "warm")  # as after any first run here: auto measured, the model's cache kept
    fp32_s, _, _ = child_batch(data, folder / "fp32", "--backend", "torch")
    auto_s, auto, measured = child_batch(data, folder / "auto")
    chosen = auto.backend
    plain_s = banded_s = float("inf")
    for attempt in range(repeat):
        banded_s = min(banded_s, child_batch(data, folder / f"banded-{attempt}", "--backend", chosen)[0])
        plain = ["--backend", chosen, "--rescore-band", "0"]
        plain_s = min(plain_s, child_batch(data, folder / f"plain-{attempt}", *plain)[0])
    expected, found = semsim_pairs(folder / "fp32"), semsim_pairs(folder / "auto")
    both = len(expected & found)
    print(
        f"{len(titles)} titles: semsim batch --backend torch {fp32_s:.1f} s ({len(expected)} pairs); auto -> {chosen} "
        f"with --rescore-band {auto.rescore_band}: {auto_s:.1f} s = {faster(fp32_s, auto_s)}; pairs vs fp32: "
        f"recall {share(both, len(expected))}, precision {share(both, len(found))}"
    )
    print(
        f"  rescoring: {auto.rescored_pairs or 0} pairs, {auto.rescored_texts or 0} texts re-embedded in "
        f"{measured.get('rescore_encode_ms', 0) / 1000:.1f} s; --backend {chosen}, best of {repeat}: {banded_s:.1f} s "
        f"with the band, {plain_s:.1f} s without: rescoring costs {(banded_s - plain_s) / banded_s:+.1%} of the run"
    )


def compare_paraphrase_mining(titles: list[str], backends: list[str], folder: Path, repeat: int) -> None:
    from sentence_transformers import util

    model = Embedder.load(backend="torch").model
    mined, mining_s = timed(lambda: util.paraphrase_mining(model, titles, batch_size=32, top_k=100), repeat=repeat)
    expected = {tuple(sorted((f"t{i}", f"t{j}"))) for score, i, j in mined if score >= DEFAULT_THRESHOLD}
    data = write_titles(folder, titles)
    print(
        f"{len(titles)} titles: paraphrase_mining (top_k 100) {mining_s:.1f} s, {len(expected)} pairs >= "
        f"{DEFAULT_THRESHOLD}"
    )
    for backend in backends:
        outs = [folder / f"mining-{backend}-{attempt}" for attempt in range(repeat)]
        semsim_s, summary, _ = min((run_batch(data, out, "--backend", backend) for out in outs), key=lambda r: r[0])
        found = semsim_pairs(outs[-1])
        print(
            f"  semsim batch --backend {backend} ({summary.backend}): {semsim_s:.1f} s = "
            f"{faster(mining_s, semsim_s)}; finds {share(len(expected & found), len(expected))} of those pairs "
            f"({len(found)} pairs in all)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--titles", type=Path, default=SAMPLE_TITLES, help="titles file (default: the committed sample)"
    )
    parser.add_argument("-n", type=int, default=5000, help="titles for the backend comparison")
    parser.add_argument("--backends", nargs="+", choices=CHOICES, default=[*BACKENDS, AUTO])
    parser.add_argument("--mining", type=int, default=20000, help="titles for the end-to-end comparisons (0: skip)")
    parser.add_argument("--mining-backends", nargs="+", choices=CHOICES, default=["torch", "openvino", AUTO])
    parser.add_argument("--skip-mining", action="store_true", help="skip the paraphrase_mining comparison")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend measure; the best counts")
    parser.add_argument("--mining-repeat", type=int, default=1, help="runs per paraphrase_mining comparison")
    args = parser.parse_args()
    print(machine())
    with tempfile.TemporaryDirectory() as tmp:
        compare_backends(read_titles(args.titles, args.n), args.backends, Path(tmp), args.repeat)
        if args.mining:
            titles = read_titles(args.titles, args.mining)
            compare_auto_with_fp32(titles, Path(tmp), args.repeat)
            if not args.skip_mining:
                compare_paraphrase_mining(titles, args.mining_backends, Path(tmp), args.mining_repeat)


if __name__ == "__main__":
    main()
