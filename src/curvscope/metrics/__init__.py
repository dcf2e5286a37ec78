"""Metrics on eigenpairs and spectra: overlaps, gradient confinement, bulk/outliers, Goldilocks."""

from curvscope.metrics.gradient import confinement_chance, gradient_confinement, subspace_persistence
from curvscope.metrics.overlap import (
    best_mask,
    chance_overlap,
    layer_matched_random_mask,
    magnitude_mask,
    mask_iou,
    mask_overlap,
    orthonormal_basis,
    principal_angles,
    random_mask,
    random_mask_overlap,
    subspace_overlap,
)
from curvscope.metrics.spectrum import (
    GoldilocksResult,
    LogitClustering,
    SpectrumSplit,
    goldilocks,
    logit_gradient_clustering,
    random_orthonormal,
    split_spectrum,
)

__all__ = [
    "GoldilocksResult",
    "LogitClustering",
    "SpectrumSplit",
    "best_mask",
    "chance_overlap",
    "confinement_chance",
    "goldilocks",
    "gradient_confinement",
    "layer_matched_random_mask",
    "logit_gradient_clustering",
    "magnitude_mask",
    "mask_iou",
    "mask_overlap",
    "orthonormal_basis",
    "principal_angles",
    "random_mask",
    "random_mask_overlap",
    "random_orthonormal",
    "split_spectrum",
    "subspace_overlap",
    "subspace_persistence",
]
