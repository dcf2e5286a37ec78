"""Problems and computations of the FSDP2 tests: one process on all batches vs W ranks sharded."""

import functools

import torch
from torch import nn

from curvscope import Hessian, diagonal, eigsh, sketched_eigh, spectral_density, trace
from curvscope.linalg import deflated_density, power_iteration
from curvscope.metrics import gradient_confinement, mask_overlap, subspace_overlap

PROBLEMS = ("mlp", "gpt2")


def make_problem(name: str):
    """``(model, loss_fn, batches)`` in float64: 8 uneven batches (round-robin gives uneven shards)."""
    g = torch.Generator().manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(5, 12), nn.Tanh(), nn.Linear(12, 6)).double()
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        x = torch.randn(37, 5, generator=g, dtype=torch.float64)
        y = torch.arange(37) % 6
        return model, nn.CrossEntropyLoss(), [(x[i : i + 5], y[i : i + 5]) for i in range(0, 37, 5)]
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=16, n_positions=6, n_embd=8, n_layer=1, n_head=2, resid_pdrop=0.0,
                        embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="eager")  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(config).double()
    ids = torch.randint(0, 16, (11, 6), generator=g)
    labels = ids.clone()
    labels[::3, :2] = -100  # token units differ between batches
    return model, None, [{"input_ids": ids[i : i + 2], "labels": labels[i : i + 2]} for i in range(0, 11, 2)]


def wrap(model: nn.Module) -> nn.Module:
    """``fully_shard`` per block (Linear layers / transformer blocks), then the root, as the CLI does."""
    from curvscope.distributed.fsdp import wrap_fsdp

    return wrap_fsdp(model)


def probe_vectors(D: int) -> torch.Tensor:
    return torch.randn(D, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def compute(A, local=lambda X: X) -> dict:
    """Products, top-4 eigenpairs (eigsh, two sketches), an SLQ density, a Hutch++ trace of ``A`` (sharded or not)."""
    D = A.shape[0]
    out = {"hv": A @ local(probe_vectors(D))}
    top = eigsh(A, k=4, which="LA", tol=1e-9, num_matvecs=300, seed=0)
    out.update(eig=top.eigenvalues, res=top.residuals, converged=top.converged, anorm=torch.tensor(top.anorm),
               tol=torch.tensor(top.tol), vectors=top.eigenvectors)  # fmt: skip
    dens = spectral_density(A, "slq", num_probes=3, num_steps=10, seed=0)
    out["slq_nodes"], out["slq_weights"] = dens.nodes, dens.weights
    # its own eigsh at a tolerance fd products resolve (tol=1e-9 above is below it): the same pairs deflated
    deflated = deflated_density(A, num_outliers=4, num_probes=2, num_steps=8, eigsh_tol=1e-5, seed=0)
    out["defl_k"] = torch.tensor(deflated.num_outliers)
    out["defl_nodes"], out["defl_weights"] = deflated.nodes, deflated.weights
    basis = eigsh(A, k=20, which="LA", num_matvecs=22, residuals="ritz", seed=0)  # memory only: few products
    out["trace"] = torch.tensor(trace(A, "hutch++", 9, seed=0).estimate)
    xt = trace(A, "xtrace", 12, seed=0)  # QR of sharded vectors: CholeskyQR2
    out["xtrace"] = torch.tensor([xt.estimate, xt.stderr], dtype=torch.float64)
    out["xdiag"] = diagonal(A, "xdiag", 12, seed=0).estimate  # this rank's entries
    power = power_iteration(A, k=2, block_size=2, num_matvecs=40, tol=1e-12, seed=0)  # 20 block steps
    out["power_eig"], out["power_res"] = power.eigenvalues, power.residuals
    out["basis_nbytes"] = torch.tensor(basis.basis_nbytes)
    krylov = sketched_eigh(A, 4, num_matvecs=40, block_size=4, sort="value", error_probes=6, seed=0)
    out["sketch_eig"], out["sketch_res"] = krylov.eigenvalues, krylov.residuals
    out["sketch_err"] = torch.tensor([krylov.error_fro, krylov.norm_fro])
    core = sketched_eigh(A, 4, method="core", num_matvecs=30, error_probes=0, residual_pairs=4, seed=0)
    out["core_eig"], out["core_res"] = core.eigenvalues, core.residuals
    # metrics from inner products of sharded vectors (each rank passes its rows and the space)
    space = getattr(A, "space", None)
    mask = local(torch.arange(D)[:, None] % 7 == 0)[:, 0]  # a fixed coordinate mask, cut to this rank's rows
    out["metrics"] = torch.tensor([
        subspace_overlap(top.eigenvectors, krylov.eigenvectors, space=space).value,
        subspace_overlap(top.eigenvectors[:, :2], local(probe_vectors(D)), space=space).value,
        mask_overlap(mask, top.eigenvectors, space=space).value,
        gradient_confinement(local(probe_vectors(D))[:, 0], top.eigenvectors, space=space).value,
    ], dtype=torch.float64)  # fmt: skip
    return out


@functools.lru_cache
def single(name: str) -> dict:
    """The single-process float64 reference."""
    model, loss_fn, batches = make_problem(name)
    return compute(Hessian(model, loss_fn, batches))
