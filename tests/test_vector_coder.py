"""NdarrayCoder: the coder of the batch pipeline's vector PCollections."""

import numpy as np
import pytest
from apache_beam.coders import registry

from transforms.vector_coder import CellMember, IdVector, NdarrayCoder


@pytest.mark.parametrize(
    "array",
    [
        np.linspace(-1, 1, 384, dtype=np.float32),
        np.zeros((0,), dtype=np.float32),
        np.arange(12, dtype=np.int64).reshape(3, 4),
        np.ones((4, 4), dtype=">f8")[:, :1],  # big-endian, not contiguous
        np.array(3.5, dtype=np.float16),
    ],
)
def test_round_trip_keeps_dtype_shape_values_and_is_writable(array):
    decoded = NdarrayCoder().decode(NdarrayCoder().encode(array))
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    np.testing.assert_array_equal(decoded, array)
    decoded[...] = 0  # downstream steps may write into what they receive


def test_equal_arrays_encode_alike():
    a = np.linspace(0, 1, 8, dtype=np.float32)
    assert NdarrayCoder().encode(a) == NdarrayCoder().encode(a.copy())
    assert NdarrayCoder().encode(a) != NdarrayCoder().encode(a.astype(np.float64))


def test_pipeline_element_types_use_it():
    vector = np.linspace(-1, 1, 384, dtype=np.float32)
    id_vector = registry.get_coder(IdVector)
    record_id, decoded = id_vector.decode(id_vector.encode(("t1", vector)))
    assert record_id == "t1" and np.array_equal(decoded, vector)
    member = registry.get_coder(CellMember)
    cell, (record_id, decoded, cells) = member.decode(member.encode((7, ("t1", vector, (7, 9)))))
    assert (cell, record_id, cells) == (7, "t1", (7, 9)) and np.array_equal(decoded, vector)
    assert "NdarrayCoder" in repr(id_vector) and "NdarrayCoder" in repr(member)
