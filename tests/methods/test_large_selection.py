"""The fast exact top-k paths (sampled bracket, ties at the cutoff) on tensors large enough to use them."""

import pytest
import torch
from tests.merge.reference import trim

from graftkit.methods.stages.sparsify import kth_largest, magnitude

N = (1 << 20) + 4099  # above the size where plain kthvalue is used


@pytest.mark.parametrize("k", [1, 17, N // 5, N // 2, N - 3])
def test_kth_largest_is_exact_on_quantised_data_with_many_ties(k):
    gen = torch.Generator().manual_seed(k)
    a = torch.randint(0, 50, (N,), generator=gen).float()  # only 50 distinct values
    assert torch.equal(kth_largest(a, k), a.kthvalue(N - k + 1).values)


@pytest.mark.parametrize("density", [0.2, 0.01, 0.7])
def test_magnitude_trim_keeps_exactly_k_with_lower_index_ties(density):
    gen = torch.Generator().manual_seed(1)
    d = (torch.randint(-40, 41, (N,), generator=gen) * 0.001).float()  # heavy ties at every magnitude
    want = trim(d.clone(), density)
    got = magnitude(d.clone(), density=density, rescale="none")
    assert torch.equal(got, want)
    assert int(torch.count_nonzero(got)) == int(torch.count_nonzero(want))


def test_magnitude_trim_on_smooth_data_matches_reference():
    d = torch.randn(N, generator=torch.Generator().manual_seed(2)) * 1e-3
    assert torch.equal(magnitude(d.clone(), density=0.2), trim(d.clone(), 0.2))
