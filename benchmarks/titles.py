"""Reddit titles for the benchmarks: the committed sample (3,000 titles) unless ``--titles`` names a larger file.

The larger runs quoted in the README read a 500,000-title sample of the Reddit top-posts data set
(github.com/umbrae/reddit-top-2.5-million, public domain) as a ``.tsv.gz`` with a ``title`` column; a ``.jsonl``
file with a ``text`` field works too.
"""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

SAMPLE_TITLES = Path(__file__).resolve().parents[1] / "data" / "sample" / "reddit_titles.jsonl"


def read_titles(path: Path, n: int) -> list[str]:
    """The first ``n`` titles of ``path`` (fewer when it holds fewer; the caller prints how many it got)."""
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            return [json.loads(line)["text"] for line, _ in zip(f, range(n), strict=False)]
    with gzip.open(path, "rt", encoding="utf-8") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["title"] for row, _ in zip(reader, range(n), strict=False)]


def write_titles(folder: Path, titles: list[str], name: str = "titles.jsonl", first_id: int = 0) -> Path:
    """``titles`` as ``folder/name`` JSONL records with ids ``t0000000``, ``t0000001``, ... from ``first_id`` (ids
    sort in title order, as time-ordered ids do)."""
    path = folder / name
    path.write_text("".join(json.dumps({"id": f"t{first_id + i:07d}", "text": t}) + "\n" for i, t in enumerate(titles)))
    return path
