"""The deployment files under deploy/: they parse, use the real field names, images, ports and pipeline options, and
the scripts run the commands they document (with stand-ins for ``semsim`` and ``gcloud``). Nothing is built,
started or fetched."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path

import apache_beam
import pytest
import yaml
from apache_beam.options.pipeline_options import (
    FlinkRunnerOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
)

from pipelines.options import BatchDedupOptions, SemsimOptions, StreamingDedupOptions

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
FLINK = DEPLOY / "flink"
DATAFLOW = DEPLOY / "dataflow"
BEAM_VERSION = apache_beam.__version__

# The Flink Kubernetes Operator's FlinkDeployment (flink.apache.org/v1beta1) fields, from its CRD and the spec classes
# of flink-kubernetes-operator-api (FlinkDeploymentSpec + AbstractFlinkSpec, JobManagerSpec, TaskManagerSpec, Resource)
DEPLOYMENT_SPEC_FIELDS = {
    "image", "imagePullPolicy", "serviceAccount", "flinkVersion", "ingress", "podTemplate", "jobManager",
    "taskManager", "logConfiguration", "mode", "job", "restartNonce", "flinkConfiguration",
}  # fmt: skip
MANAGER_FIELDS = {"resource", "replicas", "podTemplate"}
RESOURCE_FIELDS = {"cpu", "memory", "ephemeralStorage"}
OPERATOR_FLINK_VERSIONS = {"v1_16", "v1_17", "v1_18", "v1_19", "v1_20"}  # the supported ones of its FlinkVersion
WORKER_POOL = ["python", "-m", "apache_beam.runners.worker.worker_pool_main", "--service_port=50000"]
JOB_SERVER_PORTS = {8099, 8098, 8097}  # job API, artifact staging, expansion service
PORTABLE_FLAGS = {
    "--runner": "PortableRunner",
    "--job_endpoint": "JOB_SERVER:8099",
    "--artifact_endpoint": "JOB_SERVER:8098",
    "--environment_type": "EXTERNAL",
    "--environment_config": "localhost:50000",
}


def documents(path: Path) -> list:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def flink_deployment() -> dict:
    (doc,) = documents(FLINK / "flink-deployment.yaml")
    return doc


def job_server() -> tuple[dict, dict]:
    """The job server's Deployment and Service."""
    kinds = {doc["kind"]: doc for doc in documents(FLINK / "job-server.yaml")}
    assert set(kinds) == {"Deployment", "Service"}
    return kinds["Deployment"], kinds["Service"]


def compose_services() -> dict:
    (doc,) = documents(FLINK / "docker-compose.yaml")
    return doc["services"]


def sidecar() -> dict:
    pod = flink_deployment()["spec"]["taskManager"]["podTemplate"]
    (container,) = [c for c in pod["spec"]["containers"] if c["name"] != "flink-main-container"]
    return container


def flink_version() -> str:
    """The cluster's Flink version as Beam names it: v1_20 -> 1.20."""
    return flink_deployment()["spec"]["flinkVersion"].removeprefix("v").replace("_", ".")


def instructions(path: Path) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments), continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", "", path.read_text(encoding="utf-8"))
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def stub(folder: Path, name: str) -> Path:
    """An executable ``name`` that appends its arguments, one per line and then a blank line, to ``calls``."""
    calls = folder / "calls"
    script = folder / name
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" >> "{calls}"\necho >> "{calls}"\n', encoding="utf-8")
    script.chmod(0o755)
    return calls


def run_with_stub(tmp_path: Path, name: str, args: list[str], env: dict[str, str]) -> list[list[str]]:
    """Run a deploy script with ``name`` stubbed; return the stub's calls, each a list of arguments."""
    calls = stub(tmp_path, name)
    kept = {key: value for key, value in os.environ.items() if key not in ("EMBED_THREADS", "REPO", "TAG", "BUILDER")}
    path = f"{tmp_path}{os.pathsep}{os.environ['PATH']}"
    done = subprocess.run(["bash", *args], env={**kept, "PATH": path, **env}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return [call.splitlines() for call in calls.read_text(encoding="utf-8").split("\n\n") if call]


def option_actions(*classes) -> dict[str, argparse.Action]:
    """The options the given PipelineOptions classes add themselves, by name (dest)."""
    parser = argparse.ArgumentParser(add_help=False)
    for cls in classes:
        cls._add_argparse_args(parser)
    return {action.dest: action for action in parser._actions}


SEMSIM_OPTIONS = set(option_actions(SemsimOptions, BatchDedupOptions, StreamingDedupOptions))
BEAM_OPTIONS = set(PipelineOptions([]).get_all_options()) - SEMSIM_OPTIONS


@pytest.mark.parametrize(
    "path", sorted([*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml")]), ids=lambda p: str(p.relative_to(DEPLOY))
)
def test_yaml_parses(path):
    assert documents(path)


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.json")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_json_parses(path):
    assert json.loads(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.sh")), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_shell_scripts_pass_bash_n(path):
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.access(path, os.X_OK)


def test_flink_deployment_uses_the_operators_field_names():
    doc = flink_deployment()
    assert (doc["apiVersion"], doc["kind"]) == ("flink.apache.org/v1beta1", "FlinkDeployment")
    spec = doc["spec"]
    assert set(spec) <= DEPLOYMENT_SPEC_FIELDS
    assert {"image", "flinkVersion", "flinkConfiguration", "serviceAccount", "jobManager", "taskManager"} <= set(spec)
    assert "job" not in spec  # a session cluster, which the job server submits to
    assert spec["mode"] in ("native", "standalone")
    for manager in ("jobManager", "taskManager"):
        assert set(spec[manager]) <= MANAGER_FIELDS
        assert set(spec[manager]["resource"]) <= RESOURCE_FIELDS
    assert all(isinstance(value, str) for value in spec["flinkConfiguration"].values())  # the CRD: a map of strings


def test_flink_beam_and_image_versions_agree():
    spec = flink_deployment()["spec"]
    assert spec["flinkVersion"] in OPERATOR_FLINK_VERSIONS
    assert flink_version() in FlinkRunnerOptions.PUBLISHED_FLINK_VERSIONS
    job_server_image = f"apache/beam_flink{flink_version()}_job_server:{BEAM_VERSION}"
    deployment, _ = job_server()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    services = compose_services()
    assert container["image"] == services["job-server"]["image"] == job_server_image
    for image in (spec["image"], services["jobmanager"]["image"], services["taskmanager"]["image"]):
        assert image.startswith(f"flink:{flink_version()}-")


def test_task_managers_have_the_worker_pool_beside_them():
    assert sidecar()["command"] == WORKER_POOL
    assert [port["containerPort"] for port in sidecar()["ports"]] == [50000]
    pool = compose_services()["worker-pool"]
    assert pool["entrypoint"] == WORKER_POOL
    assert pool["network_mode"] == "service:taskmanager"  # the task manager's localhost:50000


def test_slots_times_embed_threads_fill_the_sidecar():
    slots = int(flink_deployment()["spec"]["flinkConfiguration"]["taskmanager.numberOfTaskSlots"])
    threads = int(re.search(r"EMBED_THREADS:-(\d+)", (FLINK / "submit.sh").read_text(encoding="utf-8")).group(1))
    assert slots * threads == int(sidecar()["resources"]["requests"]["cpu"])


def test_job_server_ports_and_flink_master():
    deployment, service = job_server()
    template = deployment["spec"]["template"]
    (container,) = template["spec"]["containers"]
    assert {port["containerPort"] for port in container["ports"]} == JOB_SERVER_PORTS
    assert {port["port"] for port in service["spec"]["ports"]} == JOB_SERVER_PORTS
    assert service["spec"]["selector"].items() <= template["metadata"]["labels"].items()
    args = dict(arg.split("=", 1) for arg in container["args"])
    assert args["--flink-master"] == f"{flink_deployment()['metadata']['name']}-rest:8081"  # the operator's service
    assert args["--job-host"] == "0.0.0.0" and "--artifacts-dir" in args
    compose = compose_services()["job-server"]
    assert {int(port.split(":")[1]) for port in compose["ports"]} == JOB_SERVER_PORTS
    assert "--flink-master=jobmanager:8081" in compose["command"]


def test_portable_flags_are_beam_options():
    lines = [line for line in (FLINK / "portable-flags.txt").read_text().splitlines() if line and line[0] != "#"]
    assert dict(line.split("=", 1) for line in lines) == PORTABLE_FLAGS
    options = PipelineOptions([line.replace("JOB_SERVER", "js") for line in lines])
    assert options.view_as(StandardOptions).runner == "PortableRunner"
    portable = options.view_as(PortableOptions)
    assert (portable.job_endpoint, portable.artifact_endpoint) == ("js:8099", "js:8098")
    assert (portable.environment_type, portable.environment_config) == ("EXTERNAL", "localhost:50000")


def test_submit_runs_semsim_batch_with_the_portable_flags(tmp_path):
    args = [str(FLINK / "submit.sh"), "gs://b/in/*.jsonl", "gs://b/out", "--threshold", "0.9"]
    (call,) = run_with_stub(tmp_path, "semsim", args, {"JOB_SERVER": "js"})
    flags = [f"{flag}={value.replace('JOB_SERVER', 'js')}" for flag, value in PORTABLE_FLAGS.items()]
    head = ["batch", "--input", "gs://b/in/*.jsonl", "--output", "gs://b/out", "--embed-threads", "2"]
    assert call == [*head, *flags, "--threshold", "0.9"]


@pytest.mark.parametrize(
    ("metadata", "pipeline", "required"),
    [
        ("batch-metadata.json", BatchDedupOptions, {"output"}),
        ("stream-metadata.json", StreamingDedupOptions, {"subscription", "output"}),
    ],
)
def test_flex_template_parameters_are_the_pipelines_options(metadata, pipeline, required):
    meta = json.loads((DATAFLOW / metadata).read_text(encoding="utf-8"))
    assert meta["name"] and meta["description"]
    params = {param["name"]: param for param in meta["parameters"]}
    assert len(params) == len(meta["parameters"])
    own = option_actions(SemsimOptions, pipeline)
    # every option of the pipeline that takes a value is a parameter; on/off switches cannot be (--name=value)
    assert {name for name, action in own.items() if action.nargs != 0} == set(params) - BEAM_OPTIONS
    for name, param in params.items():
        assert name in own or name in BEAM_OPTIONS, name
        assert param["label"] and param["helpText"]
        assert param["isOptional"] is (name not in required), name
        examples = [own[name].default, *(own[name].choices or ())] if name in own else []
        for regex in param.get("regexes", []):
            for example in [e for e in examples if e is not None]:
                assert re.fullmatch(regex, str(example)), (name, regex, example)
    assert meta.get("streaming", False) is (pipeline is StreamingDedupOptions)


def test_sdk_image():
    steps = instructions(DATAFLOW / "sdk.Dockerfile")
    assert [args for step, args in steps if step == "FROM"] == [f"apache/beam_python3.11_sdk:{BEAM_VERSION}"]
    assert ("ENV", "SEMSIM_CACHE=/opt/semsim-cache") in steps
    runs = [args for step, args in steps if step == "RUN"]
    pins = (REPO / "requirements" / "constraints.txt").read_text(encoding="utf-8").splitlines()
    torch = next(line for line in pins if line.startswith("torch=="))
    assert f"--index-url https://download.pytorch.org/whl/cpu {torch}" in runs[0]
    assert "-c /tmp/semsim/requirements/constraints.txt" in runs[1]
    assert "EmbedConfig().load()" in runs[2]
    assert steps.index(("ENV", "SEMSIM_CACHE=/opt/semsim-cache")) < steps.index(("RUN", runs[2]))


def test_flex_template_image():
    steps = instructions(DATAFLOW / "flex-template.Dockerfile")
    assert [args for step, args in steps if step == "FROM"] == [
        "gcr.io/dataflow-templates-base/python311-template-launcher-base"
    ]
    env = dict(args.split("=", 1) for step, args in steps if step == "ENV")
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "/template/flex_main.py"
    assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "/template/setup.py"
    assert env["SEMSIM_PIPELINE"] == "${PIPELINE}" and ("ARG", "PIPELINE=batch") in steps
    assert ("COPY", "deploy/dataflow/flex_main.py ./") in steps and ("COPY", "setup.py README.md ./") in steps


@pytest.mark.parametrize("dockerfile", ["sdk.Dockerfile", "flex-template.Dockerfile"])
def test_dockerfiles_copy_existing_files_their_dockerignore_keeps(dockerfile):
    ignore = (DATAFLOW / f"{dockerfile}.dockerignore").read_text(encoding="utf-8").splitlines()
    for step, args in instructions(DATAFLOW / dockerfile):
        if step == "COPY":
            for source in args.split()[:-1]:
                assert (REPO / source).exists(), source
                assert f"!{source}" in ignore, source


def test_cloud_build_builds_what_it_pushes():
    (build,) = documents(DATAFLOW / "cloudbuild.yaml")
    tags = {step["args"][step["args"].index("-t") + 1] for step in build["steps"]}
    assert tags == set(build["images"])
    for step in build["steps"]:
        assert (REPO / step["args"][step["args"].index("-f") + 1]).is_file()


def test_launch_builds_both_templates_and_runs_them(tmp_path):
    env = {"PROJECT": "p", "REGION": "r", "BUCKET": "b"}
    script = str(DATAFLOW / "launch.sh")
    builds = run_with_stub(tmp_path, "gcloud", [script, "templates"], env)
    assert [call[:3] for call in builds] == [["dataflow", "flex-template", "build"]] * 2
    for call, pipeline in zip(builds, ("batch", "stream"), strict=True):
        assert call[3] == f"gs://b/templates/semsim-{pipeline}.json"
        assert (REPO / call[call.index("--metadata-file") + 1]).is_file()
        assert call[call.index("--image") + 1] == f"r-docker.pkg.dev/p/semsim/semsim-{pipeline}-template:0.1.0"
    (tmp_path / "calls").unlink()
    args = [script, "batch", "gs://b/in/*.jsonl", "gs://b/out", "threshold=0.9"]
    (run,) = run_with_stub(tmp_path, "gcloud", args, env)
    assert run[:3] == ["dataflow", "flex-template", "run"]
    assert run[run.index("--template-file-gcs-location") + 1] == "gs://b/templates/semsim-batch.json"
    params = [run[i + 1] for i, arg in enumerate(run) if arg == "--parameters"]
    assert params == [
        "sdk_container_image=r-docker.pkg.dev/p/semsim/semsim-sdk:0.1.0",
        "embed_threads=1",
        "input=gs://b/in/*.jsonl",
        "output=gs://b/out",
        "threshold=0.9",
    ]


def test_flex_main_reports_bad_options_without_submitting(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("SEMSIM_PIPELINE", raising=False)
    spec = importlib.util.spec_from_file_location("flex_main", DATAFLOW / "flex_main.py")
    flex_main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flex_main)
    missing = ["--input", str(tmp_path / "missing-*.jsonl"), "--output", str(tmp_path / "out")]
    assert flex_main.main(missing) == 2
    assert "semsim batch: error: --input" in capsys.readouterr().err
    monkeypatch.setenv("SEMSIM_PIPELINE", "stream")
    assert flex_main.main(["--subscription", "nope", "--output", str(tmp_path / "out")]) == 2
    assert "semsim stream: error: --subscription is required" in capsys.readouterr().err
    monkeypatch.setenv("SEMSIM_PIPELINE", "other")
    assert flex_main.main([]) == 2
