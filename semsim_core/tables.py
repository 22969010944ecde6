"""Input rows as Arrow tables, and many tables' schemas unified into one (``deduplicated/``).

Rules, in the order they apply:

- A table keeps the types its input had: Parquet's own column types; JSON's types as pyarrow infers them from the
  parsed values (numbers, booleans, strings, nested objects and lists); CSV and TSV values stay strings.
- A column whose values in one table have no common type (``1`` in one JSON line, ``"one"`` in the next) is
  written as strings: JSON text for values that are not strings.
- :func:`unify` joins columns by name. Types that widen into one another join as the wider (``int32`` and ``int64``:
  ``int64``; ``int64`` and ``double``: ``double``; all-null columns take the other's type); any other mix is
  ``string``, each value converted as above. A column missing from a table is null in its rows. Column order: the
  first schema's, then each new column where it first appears, schemas taken in the order given.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa


def _as_text(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def rows_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """``rows`` (parsed records, e.g. JSON objects) as a table: one column per key in first-seen order, typed as
    pyarrow infers each column, or strings where a column's values share no type."""
    names = list(dict.fromkeys(name for row in rows for name in row))
    columns = []
    for name in names:
        values = [row.get(name) for row in rows]
        try:
            columns.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):  # e.g. mixed types, an integer over 64 bits
            columns.append(pa.array([_as_text(v) for v in values], pa.string()))
    return pa.Table.from_arrays(columns, names=names) if names else pa.table({})


def _joined_type(types: list[pa.DataType], name: str) -> pa.DataType:
    unified = types[0]
    for other in types[1:]:
        try:
            unified = (
                pa.unify_schemas(
                    [pa.schema([(name, unified)]), pa.schema([(name, other)])], promote_options="permissive"
                )
                .field(name)
                .type
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return pa.string()
    return unified


def unify(schemas: Sequence[pa.Schema]) -> pa.Schema:
    """One schema for tables of ``schemas`` (see the module's rules)."""
    types: dict[str, list[pa.DataType]] = {}
    for schema in schemas:
        for field in schema:
            types.setdefault(field.name, []).append(field.type)
    return pa.schema([(name, _joined_type(kinds, name)) for name, kinds in types.items()])


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with ``schema``'s columns, in its order: missing ones null, others cast (to text where a plain cast
    cannot make the type, e.g. a nested value into a string column)."""
    columns = []
    for field in schema:
        if field.name not in table.column_names:
            columns.append(pa.nulls(len(table), field.type))
            continue
        column = table.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                column = pa.array([_as_text(v) for v in column.to_pylist()], field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)
