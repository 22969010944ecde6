"""Dataflow job descriptions built offline (``--dry_run=True --no_auth``): the transforms and options both
pipelines submit, the SDK container, and the ``--setup_file`` package staged for workers."""

from __future__ import annotations

import numpy as np
from apache_beam.options.pipeline_options import SetupOptions
from apache_beam.portability.api import beam_runner_api_pb2

from pipelines import batch_dedup, streaming_dedup
from tests.conftest import REPO, sample_titles, write_jsonl

IMAGE = "us-docker.pkg.dev/semsim-test/semsim/sdk:0.1.0"
DATAFLOW = [
    "--runner=DataflowRunner", "--dry_run=True", "--no_auth", "--project=semsim-test", "--region=us-central1",
    "--temp_location=gs://semsim-test/tmp", f"--sdk_container_image={IMAGE}", "--experiments=use_runner_v2",
    "--embed-threads=1",
]  # fmt: skip


def _dry_run(start, argv: list[str]):
    return start([*argv, *DATAFLOW]).job


def _top_level(job) -> set[str]:
    transforms = job.proto_pipeline.components.transforms
    return {t.unique_name for t in transforms.values() if "/" not in t.unique_name}


def _environment(job) -> beam_runner_api_pb2.Environment:
    (environment,) = job.proto_pipeline.components.environments.values()
    return environment


def test_a_dry_run_from_the_command_line_describes_the_job_and_runs_nothing(tmp_path, capsys):
    from pipelines.cli import main

    data = write_jsonl(tmp_path / "titles.jsonl", sample_titles(20))
    out = tmp_path / "out"
    assert main(["batch", "--input", str(data), "--output", str(out), *DATAFLOW]) == 0
    said = capsys.readouterr().out.strip()
    assert said.endswith("dry run: the job was built and described to the runner; nothing ran")
    assert not out.exists()


def test_batch_job_description(tmp_path):
    data = write_jsonl(tmp_path / "titles.jsonl", sample_titles(20))
    argv = ["--input", str(data), "--output", "gs://semsim-test/out", "--backend", "openvino-int8"]
    job = _dry_run(batch_dedup.start, [*argv, f"--setup_file={REPO / 'setup.py'}"])
    assert job.proto.type_.name == "JOB_TYPE_BATCH"
    assert {
        "Read", "DropDuplicateIds", "ExactPrepass", "Embed", "TrainCentroids", "FindPairs", "Cluster",
        "WriteTables", "Summary",
    } <= _top_level(job)  # fmt: skip
    options = job.options.get_all_options()
    assert options["backend"] == "openvino-int8" and options["embed_threads"] == 1
    assert options["output"] == "gs://semsim-test/out" and options["dry_run"]
    environment = _environment(job)
    assert environment.urn == "beam:env:docker:v1"
    assert beam_runner_api_pb2.DockerPayload.FromString(environment.payload).container_image == IMAGE
    staged = {
        beam_runner_api_pb2.ArtifactStagingToRolePayload.FromString(a.role_payload).staged_name
        for a in environment.dependencies
    }
    assert "workflow.tar.gz" in staged  # the sdist that --setup_file builds for workers
    assert job.options.view_as(SetupOptions).setup_file.endswith("setup.py")


def test_streaming_job_description(tmp_path):
    centroids = tmp_path / "centroids.npy"
    np.save(centroids, np.eye(4, 384, dtype=np.float32))
    argv = [
        "--subscription", "projects/semsim-test/subscriptions/posts", "--output", "gs://semsim-test/stream",
        "--centroids", str(centroids), "--notify-topic", "projects/semsim-test/topics/matches",
    ]  # fmt: skip
    job = _dry_run(streaming_dedup.start, argv)
    assert job.proto.type_.name == "JOB_TYPE_STREAMING"
    assert {"Read", "Match", "WritePairs", "WriteClusters", "WriteDeadLetters", "Notify"} <= _top_level(job)
    options = job.options.get_all_options()
    assert options["streaming"] and options["subscription"] == "projects/semsim-test/subscriptions/posts"
    assert options["embed_threads"] == 1
    read = [t for t in job.proto_pipeline.components.transforms.values() if t.unique_name.startswith("Read/")]
    [source] = [t for t in read if t.spec.urn == "beam:transform:pubsub_read:v1"]  # Dataflow's native Pub/Sub source
    payload = beam_runner_api_pb2.PubSubReadPayload.FromString(source.spec.payload)
    assert payload.id_attribute == "id" and payload.with_attributes, "Dataflow drops a post published twice"
