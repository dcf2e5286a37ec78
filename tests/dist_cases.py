"""The computation the distributed test runs in one process and sharded over two."""

import torch
from torch import nn

from curvscope import GGN, ClassStructure, Hessian, eigsh, sketched_eigh, spectral_density


def make_problem():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(37, 5, generator=g, dtype=torch.float64)
    y = torch.arange(37) % 3
    batches = [(x[i : i + 5], y[i : i + 5]) for i in range(0, 37, 5)]  # 8 uneven batches
    return model, nn.CrossEntropyLoss(), batches


def compute(model, loss_fn, batches) -> dict:
    g = torch.Generator().manual_seed(1)
    H = Hessian(model, loss_fn, batches)
    V = torch.randn(H.shape[0], 4, generator=g, dtype=torch.float64)
    out = {"hv": H @ V, "gv": GGN(model, loss_fn, batches) @ V, "grad": H.gradient(), "n": H.num_samples}
    cs = ClassStructure(model, loss_fn, batches)
    out["class_v"] = cs.class_term @ V
    top = eigsh(H, k=4, which="LA", tol=1e-10, seed=0)
    out["eig"] = top.eigenvalues
    dens = spectral_density(H, "slq", num_probes=3, num_steps=12, seed=0)
    out["slq_nodes"], out["slq_weights"] = dens.nodes, dens.weights
    sk = sketched_eigh(H, k=6, num_matvecs=40, seed=0, error_probes=4)
    out["sketch"] = sk.eigenvalues
    return out
