"""The Python API: graftkit.merge and graftkit.merge_state_dicts."""

import pytest
import torch
from tests.conftest import perturbed, tiny_llama
from tests.merge import reference as ref

import graftkit
import graftkit.merge.api  # noqa: F401  (importing the subpackage must not shadow the function)
from graftkit.errors import GraftError


def test_graftkit_merge_is_callable_after_the_subpackage_is_imported(tmp_path, llama_family):
    base, experts = llama_family
    recipe = {"merge_method": "linear", "models": [{"model": str(e)} for e in experts]}
    assert graftkit.merge(recipe, tmp_path / "a", progress=False) == tmp_path / "a"
    assert graftkit.merge(recipe, tmp_path / "b", progress=False) == tmp_path / "b"


def test_merge_state_dicts_matches_reference_with_modules_and_per_expert_lists():
    base = tiny_llama()
    experts = [perturbed(base, seed=s) for s in (1, 2)]
    merged = graftkit.merge_state_dicts("ties", base, experts, density=[0.3, 0.6], weight=[1.0, 2.0], **{"lambda": 0.7})
    b = base.state_dict()
    xs = [e.state_dict() for e in experts]
    for name, tensor in b.items():
        want = ref.ties(tensor, [x[name] for x in xs], [1.0, 2.0], [0.3, 0.6], lam=0.7)
        torch.testing.assert_close(merged[name], want, atol=1e-6, rtol=0)


def test_merge_state_dicts_tied_embeddings_share_storage_and_still_merge():
    from tests.conftest import tiny_gpt2

    base = tiny_gpt2()
    experts = [perturbed(base, seed=s) for s in (1, 2)]
    assert base.state_dict()["lm_head.weight"].data_ptr() == base.state_dict()["transformer.wte.weight"].data_ptr()
    merged = graftkit.merge_state_dicts("task_arithmetic", base, experts)
    assert torch.equal(merged["lm_head.weight"], merged["transformer.wte.weight"])
    model = type(base)(base.config)
    model.load_state_dict(merged)


@pytest.mark.parametrize(
    ("device", "cuda_count", "message"),
    [
        ("cuda", 0, "sees no CUDA device"),
        ("cuda:3", 2, "cuda:0 to cuda:1"),
        ("gpu", 0, "Unknown device 'gpu'"),
        ("mps", 0, "not supported for merging"),
    ],
)
def test_merge_refuses_a_device_this_machine_lacks_before_writing(
    tmp_path, llama_family, monkeypatch, device, cuda_count, message
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda_count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda_count)
    base, experts = llama_family
    recipe = {"merge_method": "linear", "models": [{"model": str(e)} for e in experts[:2]]}
    with pytest.raises(GraftError, match=message):
        graftkit.merge(recipe, tmp_path / "out", device=device, progress=False)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder
