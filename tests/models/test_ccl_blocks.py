"""CCL blocks: Hungarian centre alignment, the FIFO cohort bank, the cohort losses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from casegraph.models.ccl.alignment import CentreAnchor, align_to_anchor
from casegraph.models.ccl.bank import CohortBank
from casegraph.models.ccl.losses import (
    cohort_contrastive_loss,
    knowledge_loss,
    positive_groups,
)


def test_hungarian_alignment_recovers_a_permutation_of_the_anchor() -> None:
    rng = np.random.default_rng(0)
    anchor = rng.normal(size=(6, 5)).astype(np.float32)
    shuffle = rng.permutation(6)
    centres = anchor[shuffle] + 0.01 * rng.normal(size=(6, 5)).astype(np.float32)
    perm = align_to_anchor(centres, anchor)
    assert np.allclose(centres[perm], anchor, atol=0.05)
    assert sorted(perm.tolist()) == list(range(6))


def test_anchor_initialises_then_moves_by_tau_and_is_in_the_state_dict() -> None:
    anchor = CentreAnchor(k=2, dim=2, tau=0.1)
    first = np.array([[0.0, 0.0], [10.0, 10.0]], dtype=np.float32)
    assert np.array_equal(anchor.align(first, update=True), first)
    second = np.array([[11.0, 11.0], [1.0, 1.0]], dtype=np.float32)  # swapped order
    aligned = anchor.align(second, update=True)
    assert np.array_equal(aligned, second[[1, 0]])
    expected = 0.9 * first + 0.1 * second[[1, 0]]
    assert np.allclose(anchor.anchor.numpy(), expected)
    state = anchor.state_dict()
    assert "anchor" in state and bool(state["initialised"])
    frozen = anchor.anchor.clone()
    anchor.align(second, update=False)
    assert torch.equal(anchor.anchor, frozen)


def test_bank_is_fifo_per_group_and_detached() -> None:
    bank = CohortBank(n_groups=2, length=3, n_components=1, dim=1)
    x = torch.ones(1, 1, requires_grad=True)
    for v in range(5):
        bank.push(0, x * v)
    bank.push(1, x * 100)
    assert bank.entries(0).flatten().tolist() == [2.0, 3.0, 4.0]  # oldest first, 0 and 1 gone
    assert bank.entries(1).flatten().tolist() == [100.0]
    assert not bank.memory.requires_grad
    assert {"memory", "count", "head"} <= set(bank.state_dict())
    with pytest.raises(IndexError):
        bank.push(2, x)


def test_positive_groups_for_censored_patients_are_similar_or_lower_risk() -> None:
    assert positive_groups(1, censored=False, n_groups=4) == [1]
    assert positive_groups(1, censored=True, n_groups=4) == [1, 2, 3]


def test_cohort_contrastive_loss_by_hand() -> None:
    bank = CohortBank(n_groups=2, length=2, n_components=1, dim=2)
    bank.push(0, torch.tensor([[1.0, 0.0]]))
    bank.push(1, torch.tensor([[0.0, 1.0]]))
    feat = torch.tensor([[1.0, 0.0]])
    t = 0.5
    # uncensored group 0: positive cos 1, negative cos 0
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + math.exp(0.0)))
    got = cohort_contrastive_loss(feat, bank, group=0, censored=False, temperature=t)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    # censored in group 0: both groups are positives -> loss 0
    got = cohort_contrastive_loss(feat, bank, group=0, censored=True, temperature=t)
    assert got.item() == pytest.approx(0.0, abs=1e-6)
    empty = CohortBank(n_groups=2, length=2, n_components=1, dim=2)
    assert cohort_contrastive_loss(feat, empty, 0, False).item() == 0.0


def test_knowledge_loss_by_hand_and_stop_gradient() -> None:
    f_p = torch.tensor([1.0, 0.0], requires_grad=True)
    f_g = torch.tensor([0.0, 1.0], requires_grad=True)
    comps = {
        "common": torch.tensor([1.0, 1.0]),  # cos 1/sqrt2 with each
        "synergy": torch.tensor([1.0, -1.0]),  # |cos| 1/sqrt2 with each
        "pathology": torch.tensor([1.0, 0.0]),  # 1 - 1, |0|
        "genomics": torch.tensor([1.0, 1.0]),  # 1 - 1/sqrt2, 1/sqrt2
    }
    r = 1 / math.sqrt(2)
    expected = (2 * (1 - r)) + (2 * r) + (0.0 + 0.0) + ((1 - r) + r)
    loss = knowledge_loss(comps, f_p, f_g)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    comps = {k: v.clone().requires_grad_(True) for k, v in comps.items()}
    knowledge_loss(comps, f_p, f_g).backward()
    assert f_p.grad is None and f_g.grad is None
    assert comps["common"].grad is not None
    assert F.cosine_similarity(comps["common"], f_p, dim=-1).item() == pytest.approx(r)
