"""map_rows: blocks of rows on a thread pool give the same result as one call, and errors surface."""

import numpy as np
import pytest

from npllm.runtime.pool import CHUNK_ELEMENTS, flat, map_rows


def row_softmax(x, out):
    np.exp(x - x.max(axis=1, keepdims=True), out=out)
    out /= out.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("shape", [(3, 5), (CHUNK_ELEMENTS // 7 * 3 + 1, 7), (5, CHUNK_ELEMENTS + 3)])
def test_pieces_equal_one_call(shape):
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    whole, pieces = np.empty_like(x), np.empty_like(x)
    row_softmax(x, whole)
    map_rows(row_softmax, x, pieces)  # rows are never split, so row reductions are exact
    np.testing.assert_array_equal(pieces, whole)


def test_elementwise_on_flat_views_writes_the_whole_array():
    x = np.arange(5 * (CHUNK_ELEMENTS + 1), dtype=np.float32).reshape(-1, 5)
    out = np.zeros_like(x)
    map_rows(lambda a, b: np.multiply(a, 2, out=b), flat(x), flat(out))
    np.testing.assert_array_equal(out, 2 * x)
    with pytest.raises(ValueError, match="C-contiguous"):
        flat(x.T)


def test_a_worker_error_is_raised_in_the_caller():
    def fail(piece):
        raise RuntimeError(f"piece of {len(piece)} rows")

    with pytest.raises(RuntimeError, match="rows"):
        map_rows(fail, np.zeros(4 * CHUNK_ELEMENTS))
