"""What each paper itself reports for the statements its reproduction tests (``Claim.paper_value``).

One place for the papers' side of the "paper vs ours" tables, so they can be read and checked against
the papers together. Where a paper gives a number it is quoted with its table or figure; where it
gives only figures (most of these), its qualitative finding is stated — never a value read off a
plot or measured here. zhang2024 keeps its single statement beside its claims.
"""

from __future__ import annotations

#: What Sagun et al. report for the paper claims (their figures show spectra; no single number to compare).
SAGUN2016 = {
    "outliers": "after training the spectrum is a bulk concentrated at zero plus a few large outlying eigenvalues "
    "(spectra before and after training, MNIST and synthetic data)",
    "classes": "the outliers depend on the data: their number grows with the number of classes / clusters of the "
    "input (synthetic data with varied numbers of clusters)",
    "bulk": "the bulk at zero depends on the architecture: a larger network has a larger share of eigenvalues "
    "near zero (more singular)",
    "edges": "the edges (outliers) depend on the input data, the bulk on the architecture: the outliers are set by "
    "the data, not by the size of the network (abstract and conclusion)",
}

#: What Sagun et al. 2017 report for the paper claims (qualitative: their figures show spectra and loss curves).
SAGUN2017 = {
    "negative": "negative eigenvalues remain at the end of training, small in magnitude next to the positive "
    "outliers; they come from the residual term H_res (§2–3)",
    "outliers": "the large outliers of H come from the Gauss–Newton term G; H_res contributes to the bulk (§2–3)",
    "residual": "H_res shrinks as the loss goes to zero (its factor, the output residual, vanishes)",
    "barrier": "the loss along the straight line from a large-batch to a small-batch solution shows no barrier: "
    "the two lie in one basin (§4, line interpolations)",
    "flatter": "the small-batch solution has smaller top eigenvalues than the large-batch one (§4)",
}

#: What Papyan reports for the paper claims (measured on MNIST, Fashion-MNIST and CIFAR nets; figures).
PAPYAN2019 = {
    "count": "C outliers separated from the bulk (C = number of classes; ICML 2019 and arXiv:1811.07062, the "
    "spectra of trained nets: C = 10 outliers for the 10-class data sets)",
    "outliers": "the outliers are attributed to the class means of the gradients: the top eigenspace is (nearly) "
    "spanned by the class / cross-class gradient means (ICML 2019; JMLR 2020)",
    "H_equals_G": "the outliers of H are those of G: the residual H_res is small and contributes to the bulk, so "
    "the top eigenpairs of H and G agree (arXiv:1811.07062, the H = G + E decomposition)",
    "mini": "C(C−1) mini-outliers between the outliers and the bulk, from the cross-class covariance term; "
    "a three-level hierarchy (outliers, mini-outliers, bulk)",
    "rank": "G_B is a weighted sum of the C(C−1) outer products of the cross-class means δ̄_{c,c'} (c' ≠ c): "
    "rank C(C−1) (JMLR 2020, the decomposition of G)",
}

#: What the paper reports for each paper claim (its figures give no single number to compare with).
COHEN2021 = {
    "sharpening": "sharpness rises during training until it reaches 2/η, for MSE and cross-entropy (§3.1; "
    "Figure 1: a fully connected tanh net on a 5k-image CIFAR-10 subset; other architectures in §3 and the "
    "appendix)",
    "loss": "while sharpness hovers at (or just above) 2/η, the training loss keeps falling over long timescales, "
    "non-monotonically (§3, Figure 1)",
}

#: What the papers report for the paper claims (qualitative findings from their figures: no single number).
FORT_GANGULI2019 = {
    "logit_clustering": "per-sample gradients of one logit are strongly aligned across inputs, gradients of "
    "different logits nearly orthogonal (Fort & Ganguli's first emergent property; cosine-matrix figures)",
    "class_dependence": "within one logit, a weaker secondary clustering by the input's class (same figures)",
    "confinement": "after a short initial phase the gradient lies mostly in the top-k Hessian eigenspace, k = the "
    "number of classes (Gur-Ari et al., §2 and Fig. 1: MNIST and CIFAR-10 nets)",
    "persistence": "after the initial phase the top Hessian subspace changes slowly: the top-k subspaces at two "
    "later times overlap strongly (Gur-Ari et al., the top-subspace overlap between times t and t')",
    "rise_fall": "the top eigenvalue grows early in training and later falls (Fort & Ganguli, the local-geometry "
    "properties their model explains)",
}

#: What Fort & Scherlis report for the paper claims (qualitative: their figures give curves, not one number).
GOLDILOCKS2018 = {
    "peak": "on random low-dimensional hyperplanes Tr(H)/‖H‖ is near 0 for small and large initial radii and "
    "peaks in between (the Goldilocks zone, around the radius of the usual initialisations)",
    "positive": "the fraction of positive eigenvalues of the restricted Hessian is highest in the same zone",
}

#: What Fernandez et al. report for the paper claims (qualitative: their figures give curves, not one number).
FERNANDEZ2025 = {
    "above_chance": "the overlap between the top-k parameter-magnitude mask and the top-k Hessian eigenspace is "
    "consistently and substantially above chance (k/D), for k from tens to over 1000 eigenpairs (abstract; "
    "Figure 1: a 7,030-parameter net on 16×16 downsampled MNIST with exact and sketched eigendecompositions, §6.1 "
    "and Figure 15; sketched eigendecompositions of nets with over 10M parameters)",
    "larger": "the effect is accentuated for larger networks: the overlap relative to chance grows with model size "
    "(abstract and the large-scale sketched experiments, §6)",
    "early": "the two phenomena the paper connects both form early in training and then stay stable: the top Hessian "
    "eigenspace (curvature concentrates in it quickly) and the magnitude masks (abstract, §1)",
    "k10": "the claim spans k from tens to over 1000 (Figure 1); k = 10 is not singled out by the paper",
    "layer_matched": "not in the paper: a control added here (as many entries per layer as the magnitude mask, random "
    "within each layer)",
    "at_init": "not a claim of the paper (it measures trained nets); reported here as the baseline before training",
}
