"""A real Pub/Sub emulator for tests and benchmarks: started on a free local port, stopped with its Java process."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time

PROJECT = "semsim-test"
LAUNCHER = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator"


def find_launcher() -> str | None:
    """The emulator's launcher: its default place, the Debian package's file list (where there is ``dpkg``), or
    ``PATH``; None when it is not installed."""
    if os.path.exists(LAUNCHER):
        return LAUNCHER
    if shutil.which("dpkg"):
        listed = subprocess.run(["dpkg", "-L", "google-cloud-cli-pubsub-emulator"], capture_output=True, text=True)
        found = [line for line in listed.stdout.splitlines() if line.endswith("bin/cloud-pubsub-emulator")]
        if found:
            return found[0]
    return shutil.which("cloud-pubsub-emulator")


@contextlib.contextmanager
def pubsub_emulator():
    """A real Pub/Sub emulator on a free local port, with clients; stopped (its whole process group) on exit."""
    launcher = find_launcher()
    if launcher is None:
        raise FileNotFoundError(
            "the Pub/Sub emulator (Debian package google-cloud-cli-pubsub-emulator) is not installed"
        )
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [launcher, "--host=localhost", f"--port={port}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    os.environ["PUBSUB_EMULATOR_HOST"] = f"localhost:{port}"
    try:
        from google.cloud import pubsub_v1

        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        deadline = time.time() + 60
        while True:
            try:
                publisher.list_topics(request={"project": f"projects/{PROJECT}"}, timeout=2)
                break
            except Exception:
                if time.time() > deadline or process.poll() is not None:
                    raise
                time.sleep(0.3)
        yield publisher, subscriber, process
    finally:
        stop_process_group(process)
        if previous is None:
            del os.environ["PUBSUB_EMULATOR_HOST"]
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop the emulator's launcher and its Java child: SIGTERM to the group, SIGKILL after 15 s."""
    os.killpg(process.pid, signal.SIGTERM)
    deadline = time.time() + 15
    while True:
        process.poll()  # reap the launcher, so only live processes keep the group
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            break
        if time.time() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
        time.sleep(0.2)
