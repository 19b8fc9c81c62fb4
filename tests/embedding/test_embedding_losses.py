"""The losses and the batch sampler the embedding steps give the shared loop."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tunesmith.tasks.embedding.steps import cosent, mnrl, no_duplicate_batches


def _unit(n, d=8, seed=0):
    return F.normalize(torch.randn(n, d, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_mnrl_is_cross_entropy_over_scaled_cosines():
    a, p = _unit(4), _unit(4, seed=1)
    loss, correct = mnrl(a, p)
    ref = -sum(torch.log_softmax(20 * a[i] @ p.T, 0)[i] for i in range(4)) / 4
    assert torch.allclose(loss, ref) and 0 <= int(correct) <= 4


def test_mnrl_mask_removes_a_false_negative():
    a, p = _unit(3), _unit(3, seed=1)
    p2 = p.clone()
    p2[2] = p[0]  # row 2's positive repeats row 0's: a false negative for row 0
    masked = torch.zeros(3, 3, dtype=torch.bool)
    masked[0, 2] = masked[2, 0] = True
    plain, _ = mnrl(a, p2)
    fixed, _ = mnrl(a, p2, masked)
    logits = 20 * a @ p2.T
    ref = (-(torch.log_softmax(logits[0, :2], 0)[0]) - torch.log_softmax(logits[1], 0)[1]
           - torch.log_softmax(logits[2, 1:], 0)[1]) / 3
    assert torch.allclose(fixed, ref) and not torch.allclose(plain, fixed)


def test_cosent_matches_its_formula_and_rewards_the_right_order():
    u, v = _unit(5), _unit(5, seed=2)
    score = torch.tensor([0.0, 1.0, 2.0, 3.0, 3.0])
    cos = (u * v).sum(-1)
    terms = [math.exp(20 * (cos[j] - cos[i])) for i in range(5) for j in range(5) if score[i] > score[j]]
    assert abs(float(cosent(u, v, score)) - math.log1p(sum(terms))) < 1e-4
    # cosines in the scores' order: near zero loss; in the reverse order: large
    ref = torch.tensor([[1.0, 0.0]]).repeat(5, 1)
    ordered = F.normalize(torch.tensor([[1.0, k] for k in (4.0, 2.0, 1.0, 0.2, 0.2)]), dim=-1)
    assert float(cosent(ordered, ref, score)) < 0.05 and float(cosent(ordered, ref, score.flip(0))) > 10


def test_sampler_never_repeats_a_text_in_a_batch_and_is_reproducible():
    keys = [(i % 7, 100 + i % 11) for i in range(60)]  # anchors and positives repeat
    b = no_duplicate_batches(keys, 6, seed=3, epoch=0)
    assert sorted(i for x in b for i in x) == list(range(60))
    for batch in b:
        texts = [t for i in batch for t in keys[i]]
        assert len(texts) == len(set(texts))
    assert b == no_duplicate_batches(keys, 6, seed=3, epoch=0) != no_duplicate_batches(keys, 6, seed=3, epoch=1)
    rng = torch.Generator().manual_seed(0)  # duplicates as real data has them: as many batches as plain ones
    keys = list(zip(torch.randint(0, 300, (2000,), generator=rng).tolist(),
                    torch.randint(1000, 3000, (2000,), generator=rng).tolist()))
    assert len(no_duplicate_batches(keys, 32, seed=0, epoch=0)) == math.ceil(2000 / 32)
