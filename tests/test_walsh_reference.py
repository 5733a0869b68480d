"""The float64 Walsh reference as two matrix products equals the textbook double sum."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.edge.spectral.ops import reference_inverse_walsh, reference_walsh, sequency_hadamard


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 8, 16, 3), (3, 16, 2, 1), (1, 1, 8, 3)])
def test_reference_walsh_equals_the_double_sum(shape):
    x = np.random.default_rng(0).normal(size=shape)
    s_h, s_w = sequency_hadamard(shape[1]), sequency_hadamard(shape[2])
    forward = np.einsum("ha,nawc,bw->nhbc", s_h, x, s_w)
    inverse = np.einsum("ha,nhbc,bw->nawc", s_h, x, s_w)
    assert reference_walsh(x).shape == shape
    np.testing.assert_allclose(reference_walsh(x), forward, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reference_inverse_walsh(x), inverse, rtol=0, atol=1e-12)
    np.testing.assert_allclose(reference_inverse_walsh(reference_walsh(x)), x, rtol=0, atol=1e-12)
