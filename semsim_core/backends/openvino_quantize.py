"""Static int8 quantisation of the exported ONNX graph with NNCF, for OpenVINO, and the no-telemetry OpenVINO import.

Run as a child process by :mod:`.openvino_runtime`::

    python -m semsim_core.backends.openvino_quantize MODEL.onnx CALIBRATION.npz TARGET.xml

so NNCF's imports, progress output and worker threads stay out of the embedding process.
``CALIBRATION.npz`` holds padded batches as ``<batch index>/<input name>`` arrays.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def import_openvino():
    """Import OpenVINO without its usage telemetry. ``import openvino`` starts OpenVINO's telemetry client, which
    reports usage to Google Analytics unless the user has opted out; when ``openvino_telemetry`` cannot be imported,
    OpenVINO and NNCF fall back to their no-op stubs, so it is marked as absent unless something imported it first."""
    sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def read_batches(path: Path) -> list[dict[str, np.ndarray]]:
    """The batches of a calibration file, in order."""
    batches: dict[int, dict[str, np.ndarray]] = {}
    with np.load(path) as arrays:
        for key in arrays.files:
            index, name = key.split("/", 1)
            batches.setdefault(int(index), {})[name] = arrays[key]
    return [batches[i] for i in sorted(batches)]


def write_batches(path: Path, batches: list[dict[str, np.ndarray]]) -> None:
    """Write padded batches for :func:`read_batches`."""
    np.savez(path, **{f"{i}/{name}": array for i, batch in enumerate(batches) for name, array in batch.items()})


def quantize(onnx_path: Path, calibration: Path, target: Path) -> None:
    """Quantise ``onnx_path`` (weights and activations int8, transformer preset) and save it as ``target`` (.xml and
    .bin beside it)."""
    ov = import_openvino()
    import nncf

    batches = read_batches(calibration)
    quantized = nncf.quantize(
        ov.Core().read_model(str(onnx_path)),
        nncf.Dataset(batches),
        model_type=nncf.ModelType.TRANSFORMER,
        subset_size=len(batches),
    )
    ov.save_model(quantized, str(target))


if __name__ == "__main__":
    quantize(*(Path(arg) for arg in sys.argv[1:4]))
