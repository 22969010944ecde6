"""WriteTables: every Parquet output of a run in one write step, committed bundles only."""

from __future__ import annotations

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.run_files import read_parquet_folder
from semsim_core.clustering import singleton
from semsim_core.records import CLUSTERS_SCHEMA, PAIRS_SCHEMA, ClusterAssignment
from tests.conftest import sample_titles
from tests.object_store import ObjectStore
from transforms.write import Table, WriteTables, _finalize, _WriteBundleFilesFn, files_under

IDS = [row["id"] for row in sample_titles(300)]  # real Reddit title ids


def _clusters(ids: list[str]) -> list[ClusterAssignment]:
    return [singleton(record_id) for record_id in ids]


@pytest.fixture(params=["local", "object store"])
def folder(request, tmp_path):
    """An output folder on the local file system, or on a store of objects with no folders (as ``gs://``)."""
    if request.param == "local":
        yield str(tmp_path)
        return
    yield f"objects://bucket/{tmp_path.name}"
    ObjectStore.objects.clear()


def test_tables_are_written_in_one_step_and_an_empty_one_gets_an_empty_file(folder):
    tables = {"clusters": Table(f"{folder}/clusters", CLUSTERS_SCHEMA), "pairs": Table(f"{folder}/pairs", PAIRS_SCHEMA)}
    options = PipelineOptions(runner="FnApiRunner")
    with beam.Pipeline(options=options) as p:
        rows = {
            "clusters": p | "Clusters" >> beam.Create(_clusters(IDS)),
            "pairs": p | "Pairs" >> beam.Create([]),
        }
        rows | WriteTables(tables, rows_per_group=64)
    assert sorted(read_parquet_folder(f"{folder}/clusters", CLUSTERS_SCHEMA)["id"].to_pylist()) == sorted(IDS)
    assert read_parquet_folder(f"{folder}/pairs", PAIRS_SCHEMA).num_rows == 0
    written = sorted(path[len(folder) + 1 :] for path in files_under(folder))
    assert written[-1] == "pairs/part-00000-of-00001.parquet", "one empty file for the empty table"
    clusters = written[:-1]
    assert clusters == [f"clusters/part-{i:05d}-of-{len(clusters):05d}.parquet" for i in range(len(clusters))]
    with FileSystems.open(f"{folder}/{written[-1]}") as f:
        assert pq.read_schema(f) == PAIRS_SCHEMA


def test_only_committed_bundles_reach_the_output_and_finalizing_again_changes_nothing(folder):
    """A bundle attempt that failed after writing leaves its file in the temporary folder, where finalizing deletes
    it; the runner passes on only the retried attempt's file. A retried finalize finds its work done."""
    tables = {"clusters": Table(f"{folder}/clusters", CLUSTERS_SCHEMA, "zstd", "segment-1")}
    temp = {"clusters": f"{folder}/clusters/.temp-test"}

    def bundle(ids: list[str]) -> list[tuple[str, str]]:
        fn = _WriteBundleFilesFn(tables, temp, rows_per_group=100)
        fn.start_bundle()
        for row in _clusters(ids):
            fn.process(("clusters", row))
        return [windowed.value for windowed in fn.finish_bundle()]

    failed = bundle(IDS[:150])  # its outputs never commit
    committed = bundle(IDS[:150]) + bundle(IDS[150:])
    assert len(files_under(temp["clusters"])) == 3 and len(failed) == 1
    for _attempt in range(2):
        paths = list(_finalize(None, tables, temp, committed))
        assert [p for _, p in paths] == [f"{folder}/clusters/segment-1-0000{i}-of-00002.parquet" for i in range(2)]
        assert sorted(files_under(folder)) == sorted(p for _, p in paths), "the failed attempt's file is gone"
        assert sorted(read_parquet_folder(f"{folder}/clusters", CLUSTERS_SCHEMA)["id"].to_pylist()) == sorted(IDS)
