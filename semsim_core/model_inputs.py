"""Texts to a model's input ids: through a loaded sentence-transformers model's tokenizer, or through the copy of it
that :func:`save` keeps beside the model's built graphs, so a later process embeds with a built graph without
importing sentence-transformers (whose imports alone take 4-10 s on a 2-core machine)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from semsim_core.backends.base import input_names, write_atomically

SETTINGS = "inputs.json"  # InputSettings, in the model's backend cache folder
TOKENIZER = "tokenizer.json"  # its fast tokenizer, serialised as it was loaded

Encode = Callable[[Sequence[str]], dict[str, list[list[int]]]]


@dataclass(frozen=True)
class InputSettings:
    """What embedding needs of a model besides its network: the output dimension, the token window, whether texts
    are lowercased first, the tokenizer outputs the network reads (in order), the padding id and the special tokens
    added to each text."""

    dim: int
    max_seq_length: int
    lower: bool
    names: tuple[str, ...]
    pad_id: int
    special_tokens: int


@dataclass(frozen=True)
class ModelInputs:
    """``encode(texts)``: the ``names`` outputs per text, special tokens added, cut to ``max_seq_length``;
    ``lengths(texts)``: each text's token count without special tokens or truncation."""

    settings: InputSettings
    encode: Encode
    lengths: Callable[[Sequence[str]], list[int]]


def of_model(model) -> ModelInputs:
    """The inputs of a loaded sentence-transformers model, through its own tokenizer."""
    tokenizer = model.tokenizer
    settings = InputSettings(
        dim=int(model.get_embedding_dimension()),
        max_seq_length=int(model.max_seq_length),
        lower=bool(getattr(model[0], "do_lower_case", False)),
        names=tuple(input_names(model)),
        pad_id=int(tokenizer.pad_token_id or 0),
        special_tokens=int(tokenizer.num_special_tokens_to_add()),
    )

    def encode(texts: Sequence[str]) -> dict[str, list[list[int]]]:
        return tokenizer(list(texts), truncation=True, max_length=settings.max_seq_length)

    def lengths(texts: Sequence[str]) -> list[int]:
        return [len(ids) for ids in tokenizer(list(texts), add_special_tokens=False, truncation=False)["input_ids"]]

    return ModelInputs(settings, encode, lengths)


def save(model, inputs: ModelInputs, folder: Path) -> None:
    """Keep ``inputs`` and ``model``'s fast tokenizer in ``folder`` for :func:`load`; a model whose tokenizer is not
    a fast (Rust) one, or whose truncation is not on the right, keeps nothing and is always loaded in full."""
    tokenizer = model.tokenizer
    if not getattr(tokenizer, "is_fast", False) or tokenizer.truncation_side != "right":
        return
    folder.mkdir(parents=True, exist_ok=True)
    serialised = tokenizer.backend_tokenizer.to_str()
    write_atomically(folder / TOKENIZER, lambda path: path.write_text(serialised, encoding="utf-8"))
    settings = json.dumps(asdict(inputs.settings))
    write_atomically(folder / SETTINGS, lambda path: path.write_text(settings, encoding="utf-8"))


def load(folder: Path) -> ModelInputs | None:
    """The inputs :func:`save` kept in ``folder``, tokenized by the ``tokenizers`` library as the model's fast
    tokenizer does (right-side truncation, no padding); None when nothing was kept."""
    if not (folder / SETTINGS).is_file() or not (folder / TOKENIZER).is_file():
        return None
    from tokenizers import Tokenizer

    raw = json.loads((folder / SETTINGS).read_text(encoding="utf-8"))
    settings = InputSettings(**{**raw, "names": tuple(raw["names"])})
    serialised = (folder / TOKENIZER).read_text(encoding="utf-8")
    window, bare = Tokenizer.from_str(serialised), Tokenizer.from_str(serialised)
    for tokenizer in (window, bare):
        tokenizer.no_padding()
    window.enable_truncation(settings.max_seq_length)
    bare.no_truncation()
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}

    def encode(texts: Sequence[str]) -> dict[str, list[list[int]]]:
        encoded = window.encode_batch(list(texts))
        return {name: [getattr(e, fields[name]) for e in encoded] for name in settings.names}

    def lengths(texts: Sequence[str]) -> list[int]:
        return [len(e.ids) for e in bare.encode_batch(list(texts), add_special_tokens=False)]

    return ModelInputs(settings, encode, lengths)
