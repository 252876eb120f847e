"""CCL's cohort guidance losses as pure tensor functions.

Components are named ``"pathology"`` (uniqueness of pathology, U_p), ``"genomics"``
(uniqueness of genomics, U_g), ``"common"`` (redundancy, R) and ``"synergy"`` (S); F_p and
F_g are the modality features (d,) the components were decomposed from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from casegraph.models.ccl.bank import CohortBank


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a, b, dim=-1).mean()


def knowledge_loss(components: dict[str, torch.Tensor], f_p: torch.Tensor,
                   f_g: torch.Tensor) -> torch.Tensor:
    """l_k, the knowledge-level cohort guidance (F_p, F_g under stop-gradient):

    common:    (1 - cos(R, F_p)) + (1 - cos(R, F_g))     similar to both modalities
    synergy:   |cos(S, F_p)| + |cos(S, F_g)|             orthogonal to both
    pathology: (1 - cos(U_p, F_p)) + |cos(U_p, F_g)|     like its modality, orthogonal to the other
    genomics:  (1 - cos(U_g, F_g)) + |cos(U_g, F_p)|

    Only the components present are summed (fewer encoders, CCL Table VI). Scalar.
    """
    p, g = f_p.detach(), f_g.detach()
    terms: list[torch.Tensor] = []
    if "common" in components:
        r = components["common"]
        terms += [1 - _cos(r, p), 1 - _cos(r, g)]
    if "synergy" in components:
        s = components["synergy"]
        terms += [_cos(s, p).abs(), _cos(s, g).abs()]
    if "pathology" in components:
        u = components["pathology"]
        terms += [1 - _cos(u, p), _cos(u, g).abs()]
    if "genomics" in components:
        u = components["genomics"]
        terms += [1 - _cos(u, g), _cos(u, p).abs()]
    if not terms:
        return f_p.sum() * 0.0
    return torch.stack(terms).sum()


def positive_groups(group: int, censored: bool, n_groups: int) -> list[int]:
    """Risk groups whose bank entries are positives. Groups are time bins (0 = shortest
    survival = highest risk). An uncensored patient's group is exact; a censored patient
    survived at least to its bin, so its own and all later (similar-or-lower-risk) groups."""
    return list(range(group, n_groups)) if censored else [group]


def cohort_contrastive_loss(components: torch.Tensor, bank: CohortBank, group: int,
                            censored: bool, temperature: float = 0.1) -> torch.Tensor:
    """l_p, the patient-level cohort contrastive loss for one patient.

    components (c, d): the patient's knowledge components. For each component j, with
    cosine similarities s to that component of every bank entry,
    ``-log( sum_pos exp(s/T) / sum_all exp(s/T) )``; averaged over components. Zero (still
    differentiable) while the bank holds no positive or no entry at all.
    """
    pos_groups = set(positive_groups(group, censored, bank.n_groups))
    sims, is_pos = [], []
    for gi in range(bank.n_groups):
        entries = bank.entries(gi)  # (n_g, c, d), detached buffers
        if len(entries) == 0:
            continue
        sims.append(F.cosine_similarity(components[None], entries, dim=-1))  # (n_g, c)
        is_pos += [gi in pos_groups] * len(entries)
    if not sims or not any(is_pos):
        return components.sum() * 0.0
    logits = torch.cat(sims, dim=0) / temperature  # (n_all, c)
    mask = torch.tensor(is_pos, device=logits.device)
    log_all = torch.logsumexp(logits, dim=0)
    log_pos = torch.logsumexp(logits[mask], dim=0)
    return (log_all - log_pos).mean()
