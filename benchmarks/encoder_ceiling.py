"""How fast this CPU could encode at most: the model's multiply-adds per text against the rate this CPU's matrix
kernels reach on the model's own matrix shapes, fp32 and int8, beside each backend's measured encoding rate.

    python -m benchmarks.encoder_ceiling [--titles TITLES.tsv.gz] [-n 5000] [--backends torch onnx onnx-int8 ...]
        [--sensitivity]

The work of one batch is counted as the encoder does it: the texts tokenized and batched exactly as
``Embedder.encode`` does (padded to each batch's longest), then per layer four ``hidden x hidden`` and two
``hidden x intermediate`` matrix products per token plus the attention's two ``tokens x tokens x hidden`` products.
A kernel's rate is the best of ``--repeat`` timings of 50 runs of one layer's six weight products (the model's
first layer's weights) on a matrix of as many rows as the median batch's tokens: PyTorch fp32 (``F.linear``), ONNX
Runtime fp32 (``MatMul``) and ONNX Runtime int8 (the graph quantized with ``onnx-int8``'s own recipe). Its ceiling
is that rate over the multiply-adds per text: an upper bound, since the layer norms, softmax, GELU, tokenizer and
pooling are left out. ``--sensitivity`` then quantizes the graph with ``onnx-int8``'s recipe once whole and once
with each group of MatMuls left in fp32 (:data:`MATMUL_GROUPS`), and prints each one's probe drift from fp32 (as
``auto`` measures it) and encoding rate. Every figure is measured in this one run, on the CPU printed first.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks.measure import machine, timed
from benchmarks.titles import SAMPLE_TITLES, read_titles
from semsim_core.backends import REGISTRY
from semsim_core.embedder import EmbedConfig, Embedder, default_threads

KERNEL_CALLS = 50  # one layer's products take milliseconds: each kernel timing runs them this many times


def best_seconds(fn: Callable[[], object], repeat: int, calls: int = 1) -> float:
    """Seconds per call of ``fn``: the fastest of ``repeat`` timings of ``calls`` calls each, after one untimed
    call."""
    fn()
    return timed(lambda: [fn() for _ in range(calls)], repeat=repeat)[1] / calls


def layer_weights(model) -> list[np.ndarray]:
    """The first encoder layer's six weight matrices as ``(in, out)`` float32 arrays: Q, K, V, attention output,
    feed-forward up and down."""
    layer = model[0].auto_model.encoder.layer[0]
    linears = [
        layer.attention.self.query,
        layer.attention.self.key,
        layer.attention.self.value,
        layer.attention.output.dense,
        layer.intermediate.dense,
        layer.output.dense,
    ]
    return [linear.weight.detach().numpy().T.copy() for linear in linears]


def work_per_text(embedder: Embedder, texts: list[str], hidden: int, intermediate: int, layers: int) -> tuple:
    """(multiply-adds per text, median tokens per batch), the texts batched and padded as ``Embedder.encode`` does."""
    encoded = embedder.inputs.encode(embedder._prepared(texts))
    lengths = [len(ids) for ids in encoded["input_ids"]]
    per_token = 4 * hidden * hidden + 2 * hidden * intermediate
    macs, batch_tokens = 0, []
    for rows in embedder.batches(lengths):
        padded = max(lengths[r] for r in rows)
        batch_tokens.append(padded * len(rows))
        macs += layers * (padded * len(rows) * per_token + 2 * len(rows) * padded**2 * hidden)
    return macs / len(texts), int(statistics.median(batch_tokens))


def torch_rate(weights: list[np.ndarray], rows: int, threads: int, repeat: int) -> float:
    """PyTorch fp32: multiply-adds per second of the six products on ``rows`` tokens."""
    import torch

    torch.set_num_threads(threads)
    ws = [torch.from_numpy(w.T.copy()) for w in weights]  # F.linear takes (out, in)
    x_h, x_i = torch.randn(rows, ws[0].shape[1]), torch.randn(rows, ws[5].shape[1])

    def layer():
        with torch.inference_mode():
            return [torch.nn.functional.linear(x_i if i == 5 else x_h, w) for i, w in enumerate(ws)]

    return rows * sum(w.size for w in weights) / best_seconds(layer, repeat, KERNEL_CALLS)


def onnx_rates(weights: list[np.ndarray], rows: int, threads: int, repeat: int) -> dict[str, float]:
    """ONNX Runtime fp32 and int8 (``onnx-int8``'s quantization recipe): multiply-adds per second of the six
    products on ``rows`` tokens."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from semsim_core.backends.onnx_runtime import quantize_matmuls

    hidden, intermediate = weights[0].shape[0], weights[4].shape[1]
    inputs = [
        helper.make_tensor_value_info("x_h", TensorProto.FLOAT, [None, hidden]),
        helper.make_tensor_value_info("x_i", TensorProto.FLOAT, [None, intermediate]),
    ]
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(len(weights))]
    nodes = [helper.make_node("MatMul", ["x_i" if i == 5 else "x_h", f"w{i}"], [f"y{i}"]) for i in range(6)]
    initializers = [numpy_helper.from_array(w, f"w{i}") for i, w in enumerate(weights)]
    graph = helper.make_graph(nodes, "layer", inputs, outputs, initializers)
    feeds = {
        "x_h": np.random.default_rng(0).standard_normal((rows, hidden), dtype=np.float32),
        "x_i": np.random.default_rng(1).standard_normal((rows, intermediate), dtype=np.float32),
    }
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    macs = rows * sum(w.size for w in weights)
    rates = {}
    with tempfile.TemporaryDirectory() as folder:
        fp32, int8 = Path(folder) / "fp32.onnx", Path(folder) / "int8.onnx"
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp32)
        quantize_matmuls(fp32, int8)
        for name, path in (("fp32", fp32), ("int8", int8)):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            rates[name] = macs / best_seconds(lambda session=session: session.run(None, feeds), repeat, KERNEL_CALLS)
    return rates


# groups of the exported graph's MatMuls (by node name) that --sensitivity leaves in fp32, one group at a time
MATMUL_GROUPS = {
    "Q/K/V": r"attention/self/(query|key|value)/",
    "attention output": r"attention/output/dense/",
    "feed-forward up": r"intermediate/dense/",
    "feed-forward down": r"layer\.\d+/output/dense/",
    "first layer": r"layer\.0/",
    "last layer": r"layer\.{last}/",
}


def int8_sensitivity(reference: Embedder, titles: list[str], repeat: int) -> None:
    """Print the probe drift from fp32 (as ``auto`` measures it) and the encoding rate of ``onnx-int8``'s recipe,
    whole and with each of :data:`MATMUL_GROUPS` left in fp32."""
    import onnx

    from semsim_core.backend_choice import pair_drift, probe_texts
    from semsim_core.backends.onnx_export import onnx_graph
    from semsim_core.backends.onnx_runtime import quantize_matmuls

    first, second = probe_texts()
    probe = list(dict.fromkeys(first + second))
    fp32 = reference.encode(probe)
    source = onnx_graph(reference.model)
    matmuls = [n.name for n in onnx.load(source, load_external_data=False).graph.node if n.op_type == "MatMul"]
    last = reference.model[0].auto_model.config.num_hidden_layers - 1
    embedder = Embedder(reference.model, EmbedConfig(backend="onnx", threads=reference.threads))
    print("onnx-int8's recipe, probe drift from fp32 and rate, with one group of MatMuls left in fp32:")
    for label, pattern in {"none": "^$", **MATMUL_GROUPS}.items():
        excluded = [name for name in matmuls if re.search(pattern.format(last=last), name)]
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "int8.onnx"
            quantize_matmuls(source, path, excluded)
            embedder._run = REGISTRY["onnx-int8"].run_graph(path, reference.threads)
            drift = pair_drift(fp32, embedder.encode(probe))
            rate = len(titles) / best_seconds(lambda: embedder.encode(titles), repeat)
        print(f"  {label:<18} ({len(excluded):2d} in fp32) drift {drift:.4f}, {rate:4.0f} texts/s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--titles", type=Path, default=SAMPLE_TITLES)
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx", "onnx-int8", "openvino"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--sensitivity", action="store_true", help="also onnx-int8 with parts of the graph in fp32")
    args = parser.parse_args(argv)
    threads = default_threads()
    titles = read_titles(args.titles, args.n)
    print(machine())
    reference = EmbedConfig(backend="torch", threads=threads).load()
    config = reference.model[0].auto_model.config
    shape = (config.hidden_size, config.intermediate_size, config.num_hidden_layers)
    macs, rows = work_per_text(reference, titles, *shape)
    print(
        f"{len(titles):,} titles from {args.titles.name}: {macs / 1e6:.1f} M multiply-adds per text "
        f"(hidden, intermediate, layers = {shape}); median batch {rows} tokens"
    )
    weights = layer_weights(reference.model)
    kernels = {"PyTorch fp32": torch_rate(weights, rows, threads, args.repeat)}
    kernels.update({f"ONNX Runtime {k}": v for k, v in onnx_rates(weights, rows, threads, args.repeat).items()})
    for name, rate in kernels.items():
        print(f"  {name:<18} {rate / 1e9:6.1f} G multiply-adds/s -> ceiling {rate / macs:6.0f} texts/s")
    measured = {}
    for backend in args.backends:
        embedder = reference if backend == "torch" else EmbedConfig(backend=backend, threads=threads).load()
        measured[backend] = len(titles) / best_seconds(lambda e=embedder: e.encode(titles), args.repeat)
        print(f"  {backend:<18} {measured[backend]:6.0f} texts/s encoded ({measured[backend] * macs / 1e9:.1f} G/s)")
    int8_ceiling = kernels["ONNX Runtime int8"] / macs
    fastest_fp32 = max((rate for b, rate in measured.items() if REGISTRY[b].fp32), default=float("nan"))
    print(
        f"int8 ceiling / torch's encoding = {int8_ceiling / measured.get('torch', float('nan')):.2f}x; "
        f"/ the fastest fp32 backend's = {int8_ceiling / fastest_fp32:.2f}x"
    )
    if args.sensitivity:
        int8_sensitivity(reference, titles, args.repeat)


if __name__ == "__main__":
    main()
