"""The loss terms of C3 and its predecessors, each a scalar to minimise.

Notation (Suhail & Sethi, arXiv:2503.20187): p = softmax(C(G(z, c))), c the conditioning
vector, f the classifier's features, F̂ the row-normalised feature matrix of a batch of N.
The diversity terms can be restricted to pairs of the same label (`groups`): mixing classes in
one batch lets them be satisfied by the class differences alone, without spreading any class.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = [
    "cosine_similarity_loss",
    "cross_entropy_loss",
    "kl_divergence_loss",
    "mode_seeking_loss",
    "orthogonality_loss",
    "per_group_diversity",
    "total_variation_loss",
]


def kl_divergence_loss(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(c ‖ p) = Σ_k c_k (log c_k − log p_k), batch mean; equals −log p_y for one-hot c."""
    log_p = F.log_softmax(logits, dim=1)  # (n, K)
    return (torch.xlogy(target, target) - target * log_p).sum(dim=1).mean()


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """CE(y, p) = −log p_y, batch mean."""
    return F.cross_entropy(logits, labels)


def _pair_mask(n: int, groups: torch.Tensor | None, device: torch.device) -> torch.Tensor:
    """(n, n) bool: pairs that count (same group when `groups` (n,) is given), diagonal included."""
    if groups is None:
        return torch.ones(n, n, dtype=torch.bool, device=device)
    return groups[:, None] == groups[None, :]


def cosine_similarity_loss(
    features: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean of cos(f_i, f_j) over pairs i ≠ j (of the same group), minimised for diversity."""
    n = features.shape[0]
    unit = F.normalize(features.flatten(1), dim=1)  # (n, d)
    similarity = unit @ unit.T  # (n, n)
    mask = _pair_mask(n, groups, features.device)
    mask = mask & ~torch.eye(n, dtype=torch.bool, device=features.device)
    pairs = mask.sum()
    if pairs == 0:
        return features.new_zeros(())
    return (similarity * mask).sum() / pairs


def orthogonality_loss(
    features: torch.Tensor,
    groups: torch.Tensor | None = None,
) -> torch.Tensor:
    """‖F̂ F̂ᵀ − I‖²_F / N² (per group: over the same-group blocks, divided by Σ_g N_g²)."""
    n = features.shape[0]
    unit = F.normalize(features.flatten(1), dim=1)  # (n, d)
    gram = unit @ unit.T - torch.eye(n, device=features.device, dtype=unit.dtype)  # (n, n)
    mask = _pair_mask(n, groups, features.device)
    if not mask.any():
        return features.new_zeros(())
    return (gram.square() * mask).sum() / mask.sum()


def total_variation_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels (an image prior, off by default)."""
    dh = (images[:, :, 1:, :] - images[:, :, :-1, :]).abs().mean()
    dw = (images[:, :, :, 1:] - images[:, :, :, :-1]).abs().mean()
    return dh + dw


def mode_seeking_loss(
    images: torch.Tensor,
    latents: torch.Tensor,
    groups: torch.Tensor | None = None,
    eps: float = 1e-5,
) -> torch.Tensor:
    """1 / mean_{i≠j} (‖x_i − x_j‖₁ / ‖z_i − z_j‖₁), per-element means (MSGAN, Mao et al. 2019).

    Penalises a generator that maps different latents to the same image (mode collapse),
    which the feature-space terms cannot see when tiny pixel changes already decorrelate the
    classifier's features.
    """
    n = images.shape[0]
    image_gap = torch.cdist(images.flatten(1), images.flatten(1), p=1) / images[0].numel()
    latent_gap = torch.cdist(latents, latents, p=1) / latents.shape[1]
    mask = _pair_mask(n, groups, images.device)
    mask = mask & ~torch.eye(n, dtype=torch.bool, device=images.device)
    if not mask.any():
        return images.new_zeros(())
    ratio = (image_gap / (latent_gap + eps))[mask].mean()
    return 1.0 / (ratio + eps)


def per_group_diversity(
    features: torch.Tensor | None,
    images: torch.Tensor | None,
    latents: torch.Tensor | None,
    groups: torch.Tensor,
    num_groups: int,
    eps: float = 1e-5,
    *,
    spread_images: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """The diversity terms of each group (label) separately, for per-class weights.

    Returns (num_groups,) tensors, each entry the term over that group's pairs only:
    "cosine" (mean pairwise feature cosine, i ≠ j), "orthogonality" (mean of (F̂F̂ᵀ − I)²
    over the group's block) from `features`, and "mode_seeking" (MSGAN's
    1 / mean(‖x_i − x_j‖₁ / ‖z_i − z_j‖₁)) from `images` and `latents`; plus "pairs" (the
    number of ordered pairs i ≠ j per group; groups with none have 0 in every term). A term
    whose inputs are None is left out, so unweighted terms cost nothing. "spread" (from
    `spread_images`): mean pairwise RMS pixel distance ‖x_i − x_j‖₂ / √(C·H·W) within the
    group, the quantity the audit's diversity figures and the controller's collapse signal
    measure (to be raised, unlike the others).
    """
    n = groups.shape[0]
    device = groups.device
    same = groups[:, None] == groups[None, :]  # (n, n)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    pairs_mask = same & ~eye

    def group_sum(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = (values * mask).sum(dim=1)  # (n,)
        return torch.zeros(num_groups, dtype=values.dtype, device=device).index_add(0, groups, rows)

    ones = torch.ones(n, n, device=device)
    pairs = group_sum(ones, pairs_mask)  # (G,)
    block = group_sum(ones, same)  # (G,)
    out: dict[str, torch.Tensor] = {"pairs": pairs}
    safe_pairs = pairs.clamp_min(1.0)
    if features is not None:
        unit = F.normalize(features.flatten(1), dim=1)  # (n, d)
        similarity = unit @ unit.T  # (n, n)
        out["cosine"] = group_sum(similarity, pairs_mask) / safe_pairs
        gram = similarity - eye.to(similarity.dtype)
        out["orthogonality"] = group_sum(gram.square(), same) / block.clamp_min(1.0)
    if images is not None and latents is not None:
        flat = images.flatten(1)
        image_gap = torch.cdist(flat, flat, p=1) / flat.shape[1]  # (n, n)
        latent_gap = torch.cdist(latents, latents, p=1) / latents.shape[1]
        ratio = group_sum(image_gap / (latent_gap + eps), pairs_mask) / safe_pairs  # (G,)
        out["mode_seeking"] = torch.where(pairs > 0, 1.0 / (ratio + eps), torch.zeros_like(ratio))
    if spread_images is not None:
        flat = spread_images.flatten(1)  # (n, D)
        norms = flat.square().sum(dim=1)  # (n,)
        squared = (norms[:, None] + norms[None, :] - 2.0 * flat @ flat.T).clamp_min(0.0)
        distance = torch.sqrt(squared + 1e-12) / flat.shape[1] ** 0.5  # (n, n), RMS per pixel
        out["spread"] = group_sum(distance, pairs_mask) / safe_pairs
    return out
