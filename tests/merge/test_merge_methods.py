"""Merge arithmetic against hand-computed tensors, and the mergekit YAML subset."""
import math

import pytest
import torch

from tunesmith.errors import TunesmithError
from tunesmith.merge.build import merge_state
from tunesmith.merge.spec import MergeSpec, Source, from_flags, from_yaml
from tunesmith.merge.registry import METHODS
from tunesmith.merge.slerp import slerp


def spec(method, n=1, **kw):
    return MergeSpec(method=method, base="b", models=[Source(model=f"t{i}") for i in range(n)], **kw)


def run(method, base, tuned, s):
    return METHODS[method].merge(torch.tensor(base), [torch.tensor(t) for t in tuned], s)


def test_linear_is_wise_ft_interpolation():
    s = METHODS["linear"].with_weight(spec("linear"), 0.25)
    assert torch.allclose(run("linear", [1.0, 2.0], [[3.0, 6.0]], s), torch.tensor([1.5, 3.0]))
    s2 = METHODS["linear"].with_weight(spec("linear", 2), 1.0)  # a soup of two tuned models
    assert torch.allclose(run("linear", [0.0, 0.0], [[2.0, 4.0], [4.0, 0.0]], s2), torch.tensor([3.0, 2.0]))


def test_slerp_on_orthogonal_and_parallel_vectors():
    mid = slerp(0.5, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]))
    assert torch.allclose(mid, torch.tensor([math.sqrt(0.5), math.sqrt(0.5)]), atol=1e-6)
    third = slerp(1 / 3, torch.tensor([2.0, 0.0]), torch.tensor([0.0, 2.0]))  # keeps the norm on the arc
    assert torch.allclose(third, torch.tensor([2 * math.cos(math.pi / 6), 2 * math.sin(math.pi / 6)]), atol=1e-6)
    # parallel: falls back to linear interpolation
    assert torch.allclose(slerp(0.25, torch.tensor([1.0, 1.0]), torch.tensor([3.0, 3.0])), torch.tensor([1.5, 1.5]))
    assert torch.allclose(run("slerp", [1.0, 0.0], [[0.0, 1.0]], spec("slerp", t=0.0)), torch.tensor([1.0, 0.0]))


def test_task_arithmetic_adds_scaled_task_vectors():
    s = METHODS["task_arithmetic"].with_weight(spec("task_arithmetic", 2), 0.5)
    # base + 0.5 * ((2,3)-(1,1) + (0,5)-(1,1)) = (1,1) + 0.5 * (0, 6)
    assert torch.allclose(run("task_arithmetic", [1.0, 1.0], [[2.0, 3.0], [0.0, 5.0]], s), torch.tensor([1.0, 4.0]))


def test_ties_trims_elects_and_averages_agreeing_entries():
    s = MergeSpec(method="ties", base="b", models=[Source(model="a", density=0.5), Source(model="c", density=0.5)])
    # deltas a=(1,-2,0.1,3) → top half (0,-2,0,3); c=(-2,1.5,0.2,1) → (-2,1.5,0,0)
    # elected signs of the sum (-2,-0.5,0,3): (-,-,+,+); entries that agree: a:(·,-2,·,3) c:(-2,·,·,·)
    got = run("ties", [0.0] * 4, [[1.0, -2.0, 0.1, 3.0], [-2.0, 1.5, 0.2, 1.0]], s)
    assert torch.allclose(got, torch.tensor([-2.0, -2.0, 0.0, 3.0]))
    half = run("ties", [10.0] * 4, [[11.0, 8.0, 10.1, 13.0], [8.0, 11.5, 10.2, 11.0]], s.model_copy(update={"lam": 0.5}))
    assert torch.allclose(half, torch.tensor([9.0, 9.0, 10.0, 11.5]))


def test_merge_state_takes_missing_heads_from_tuned_and_keeps_int_buffers():
    base = {"w": torch.tensor([0.0, 0.0]), "classifier.weight": torch.tensor([9.0]), "pos": torch.tensor([0, 1])}
    tuned = [{"w": torch.tensor([2.0, 2.0]), "classifier.weight": torch.tensor([1.0]), "pos": torch.tensor([5, 5])},
             {"w": torch.tensor([4.0, 0.0]), "classifier.weight": torch.tensor([3.0]), "pos": torch.tensor([5, 5])}]
    s = METHODS["linear"].with_weight(spec("linear", 2), 0.5)
    out = merge_state(s, base, tuned, {"classifier.weight"})
    assert torch.allclose(out["w"], torch.tensor([1.5, 0.5]))
    assert torch.allclose(out["classifier.weight"], torch.tensor([2.0]))  # mean of the tuned heads, not the base's
    assert out["pos"].tolist() == [0, 1]


def test_mergekit_yaml(tmp_path):
    f = tmp_path / "m.yaml"
    f.write_text("merge_method: ties\nbase_model: minilm\nmodels:\n  - model: runs/a\n    parameters: {weight: 1.0, density: 0.3}\n"
                 "  - model: runs/b\n    parameters:\n      weight: 0.5\n      density: 0.7\nparameters:\n  lambda: 0.8\ndtype: float32\n")
    s = from_yaml(f)
    assert (s.method, s.base, s.lam) == ("ties", "minilm", 0.8)
    assert [(m.model, m.weight, m.density) for m in s.models] == [("runs/a", 1.0, 0.3), ("runs/b", 0.5, 0.7)]
    f.write_text("merge_method: linear\nmodels:\n  - model: minilm\n    parameters: {weight: 0.3}\n"
                 "  - model: runs/a\n    parameters: {weight: 0.7}\nbase_model: minilm\n")
    s = from_yaml(f)
    assert s.base_weight == 0.3 and [(m.model, m.weight) for m in s.models] == [("runs/a", 0.7)]
    f.write_text("merge_method: slerp\nbase_model: minilm\nmodels:\n  - model: runs/a\nparameters:\n  t: [0, 0.5, 1]\n")
    with pytest.raises(TunesmithError, match="gradient"):
        from_yaml(f)
    f.write_text("merge_method: dare_ties\nbase_model: minilm\nmodels:\n  - model: runs/a\n")
    with pytest.raises(TunesmithError, match="not supported"):
        from_yaml(f)


def test_flags_validate():
    with pytest.raises(TunesmithError, match="exactly one"):
        from_flags("slerp", "minilm", ["a", "b"], 0.5)
    with pytest.raises(TunesmithError, match="unknown"):
        from_flags("average", "minilm", ["a"], 0.5)
    assert from_flags("ties", "minilm", ["a", "b"], 0.7).models[0].density == 0.5
