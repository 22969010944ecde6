"""Inference backends for a sentence-transformers model on the CPU.

Each backend turns a padded batch (``input_ids``, ``attention_mask`` and, for BERT-like models, ``token_type_ids``, as
int64 arrays) into the model's sentence embeddings. ``torch`` runs the model as loaded; the others run a graph
exported locally from the same weights (ONNX through ``torch.onnx``; never downloaded) and cached under
:func:`cache_dir` in a folder named by a fingerprint of the weights and module settings, so a changed model is
rebuilt rather than reused.

====================  ======================================================================================
``torch``             PyTorch fp32, as loaded.
``onnx``              ONNX Runtime fp32 on the exported graph.
``onnx-int8``         ONNX Runtime, weights and activations int8 (dynamic quantisation, per-channel, 7-bit weights).
``openvino``          OpenVINO on the exported graph (fp32).
``openvino-bf16``     OpenVINO, bf16 inference on CPUs that have it (AVX512-BF16, AMX), fp32 elsewhere.
``openvino-int8``     OpenVINO, static int8 by NNCF, calibrated on ``int8_calibration_texts.txt`` (300 real texts).
``auto``              The fastest of these on this machine whose scores stay within a drift limit of fp32
                      (:mod:`.backend_choice`); the default.
====================  ======================================================================================
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from semsim_core.quantize_openvino import write_batches

AUTO = "auto"
DEFAULT_BACKEND = AUTO
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-bf16", "openvino-int8")
CHOICES = (AUTO, *BACKENDS)  # what --backend accepts
FP32_BACKENDS = frozenset({"torch", "onnx", "openvino"})  # scores equal the model's fp32 scores (to ~1e-6)
_OPENVINO_PRECISION = {"openvino": "f32", "openvino-bf16": "bf16", "openvino-int8": "f32"}
EXPORT_VERSION = "2"  # bump when the export or quantisation recipe changes, so caches are rebuilt
CALIBRATION_TEXTS = Path(__file__).with_name("int8_calibration_texts.txt")

Runner = Callable[[list[dict[str, np.ndarray]]], list[np.ndarray]]  # padded batches -> their embeddings, in order


def cache_dir() -> Path:
    """Where built backends live: ``$SEMSIM_CACHE``, else ``$XDG_CACHE_HOME/semsim``, else ``~/.cache/semsim``."""
    if os.environ.get("SEMSIM_CACHE"):
        return Path(os.environ["SEMSIM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semsim"


def fingerprint(model) -> str:
    """A hash of ``model``'s weights and module settings: equal for the same model, different after any change."""
    digest = hashlib.sha256(f"{EXPORT_VERSION}\n{model!r}\n{model.max_seq_length}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def input_names(model) -> list[str]:
    """The tokenizer outputs the model reads, in a fixed order."""
    names = model.tokenizer.model_input_names
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


def _export_onnx(model, path: Path) -> None:
    """Trace every module of ``model`` (transformer, pooling, dense, normalize) into one ONNX graph whose output is
    the sentence embedding."""
    import torch

    names = input_names(model)

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    sample = model.tokenizer(["a short text", "and a slightly longer one"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    with warnings.catch_warnings():
        # the traced branches (attention mask present, mask width == token count) hold for every padded batch, and
        # the graph indexes with no negative indices
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            SentenceEmbedding().eval(),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )


def _calibration_batches(model, batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    texts = CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines()
    names = input_names(model)
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = model.tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, max_length=model.max_seq_length
        )
        batches.append({n: np.asarray(encoded[n], dtype=np.int64) for n in names})
    return batches


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing): worker processes sharing a cache folder take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _build(model, backend: str, folder: Path) -> Path:
    """Build ``backend``'s graph for ``model`` in ``folder`` unless it is there; return its file. One process builds
    at a time, so processes starting together build each file once."""
    with locked(folder / ".build.lock"):
        return _build_unlocked(model, backend, folder)


def _build_unlocked(model, backend: str, folder: Path) -> Path:
    onnx_path = folder / "model.onnx"
    if not onnx_path.exists():
        _write_atomically(onnx_path, lambda tmp: _export_onnx(model, tmp))
    if backend in ("onnx", "openvino", "openvino-bf16"):
        return onnx_path
    if backend == "onnx-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        target = folder / "model-int8.onnx"
        if not target.exists():
            _write_atomically(
                target,
                lambda tmp: quantize_dynamic(
                    # 7-bit weights: without VNNI (AVX2) the u8 x s8 products sum in saturating 16-bit pairs;
                    # measured drift from fp32 on auto's probe, AVX2 (emulated Haswell) 0.063 -> 0.046, VNNI
                    # 0.053 -> 0.049
                    onnx_path,
                    tmp,
                    weight_type=QuantType.QInt8,
                    per_channel=True,
                    reduce_range=True,
                ),
            )
        return target
    target = folder / "openvino-int8.xml"
    if not target.exists():
        calibration = folder / f".calibration.{os.getpid()}.npz"
        write_batches(calibration, _calibration_batches(model))
        try:
            _write_atomically(target, lambda tmp: _quantize_in_child(onnx_path, calibration, tmp), companions=(".bin",))
        finally:
            calibration.unlink()
    return target


def import_openvino():
    """Import OpenVINO without its usage telemetry. ``import openvino`` starts OpenVINO's telemetry client, which
    reports usage to Google Analytics unless the user has opted out; when ``openvino_telemetry`` cannot be imported,
    OpenVINO and NNCF fall back to their no-op stubs, so it is marked as absent unless something imported it first."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def _quantize_in_child(onnx_path: Path, calibration: Path, target: Path) -> None:
    """Run :mod:`.quantize_openvino` in a child process that finds this copy of semsim_core; its output is kept
    and shown only if it fails."""
    command = [sys.executable, "-m", "semsim_core.quantize_openvino", str(onnx_path), str(calibration), str(target)]
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"building the openvino-int8 backend failed (exit status {done.returncode}):\n{output}")


def _write_atomically(path: Path, write: Callable[[Path], None], companions: tuple[str, ...] = ()) -> None:
    """Write through a temporary name and rename, so a concurrent or interrupted build never leaves half a file."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    write(tmp)
    for suffix in companions:
        tmp.with_suffix(suffix).replace(path.with_suffix(suffix))
    tmp.replace(path)


_NEEDS = {"onnx": ("onnxruntime", "onnx"), "openvino": ("openvino", "onnx"), "openvino-int8": ("openvino", "nncf")}


def backend_error(backend: str) -> str | None:
    """Why ``backend`` cannot run in this environment (a missing package, with the install command), or None."""
    import importlib.util

    if backend == AUTO:
        return None
    if backend not in BACKENDS:
        return f"unknown backend {backend!r}; expected one of {', '.join(CHOICES)}"
    family = "openvino" if backend.startswith("openvino") else backend.split("-")[0]
    packages = {*_NEEDS.get(family, ()), *_NEEDS.get(backend, ())}
    missing = sorted(p for p in packages if importlib.util.find_spec(p) is None)
    if missing:
        return f"backend {backend} needs {', '.join(missing)} (pip install {' '.join(missing)}), or use --backend torch"
    return None


def load_runner(model, backend: str, threads: int) -> Runner:
    """A function from padded batches to their sentence embeddings, for ``model`` run by ``backend`` on ``threads``
    threads. Graphs other than ``torch`` are built on first use and then read from the cache."""
    error = backend_error(backend)
    if error:
        raise ValueError(error)
    if backend == "torch":
        return _torch_runner(model, threads)
    path = _build(model, backend, cache_dir() / "backends" / fingerprint(model))
    if backend.startswith("onnx"):
        return _onnx_runner(path, threads)
    return _openvino_runner(path, threads, _OPENVINO_PRECISION[backend])


def _torch_runner(model, threads: int) -> Runner:
    import torch

    torch.set_num_threads(threads)
    model.eval()

    def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [
                model({name: torch.from_numpy(array) for name, array in batch.items()})["sentence_embedding"]
                .float()
                .numpy()
                for batch in batches
            ]

    return run


def _onnx_runner(path: Path, threads: int) -> Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # idle intra-op threads otherwise spin after each batch, taking the cores from the tokenizer and the pipeline
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        return [session.run(None, batch)[0] for batch in batches]

    run.session = session
    return run


def _openvino_runner(path: Path, threads: int, precision: str) -> Runner:
    """OpenVINO in throughput mode: the threads form streams (one per thread on a few cores) that each run a whole
    batch; on 2 cores this measured 5-10% (fp32) and 10-20% (int8) faster than one batch at a time on all threads,
    whose small matrices cannot keep both cores busy. The largest batches start first and each next batch goes to
    whichever stream is free (an ``AsyncInferQueue``), so no stream idles behind a long batch at the end of a call.
    Results are collected by the calling thread: the queue's own callbacks are C++, and Python callbacks would wait
    for the GIL while the pipeline's other threads hold it."""
    ov = import_openvino()
    settings = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads}
    compiled = ov.Core().compile_model(str(path), "CPU", {**settings, "INFERENCE_PRECISION_HINT": precision})
    local = threading.local()  # a queue serves one call at a time; Beam may call from several threads

    def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        if not hasattr(local, "queue"):
            local.queue = ov.AsyncInferQueue(compiled)
        queue = local.queue
        out: list[np.ndarray | None] = [None] * len(batches)
        running: list[int | None] = [None] * len(queue)  # the batch each request holds

        def collect(slot: int) -> None:
            if running[slot] is not None:
                out[running[slot]] = queue[slot].get_output_tensor(0).data.copy()
                running[slot] = None

        for index in sorted(range(len(batches)), key=lambda i: -batches[i]["input_ids"].size):
            slot = queue.get_idle_request_id()
            collect(slot)
            queue.start_async(batches[index])  # runs on the idle request just returned
            running[slot] = index
        queue.wait_all()
        for slot in range(len(queue)):
            collect(slot)
        return out

    run.compiled = compiled
    return run
