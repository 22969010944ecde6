"""PyTorch: the model as loaded, fp32. The reference every other backend is measured against."""

from __future__ import annotations

import numpy as np

from semsim_core.backends.base import Backend, Runner


def load(model, threads: int) -> Runner:
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


BACKENDS = (Backend("torch", "PyTorch fp32, as loaded.", ("torch",), True, load),)
