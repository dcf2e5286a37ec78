"""HuggingFace models with their own loss convention, token units, attention kernels and wrappers.

Truths are written independently here: the token-mean loss of the concatenated dataset (or the
sample-mean loss) from the logits by hand, differentiated by plain autograd double backward.
"""

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from curvscope import GGN, Hessian, Residual, eigsh
from curvscope.data import probe_batches
from curvscope.operators.strategies import ProductError

transformers = pytest.importorskip("transformers")
DT = torch.float64
VOCAB = 23


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def gpt2(dtype=DT, seed=0):
    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=8, vocab_size=VOCAB, n_positions=16, bos_token_id=0, eos_token_id=0
    )
    return quiet(transformers.GPT2LMHeadModel, cfg).to(dtype).eval()  # default settings: SDPA, use_cache=True


def lm_batches(seed=0):
    """Three padded batches with 13, 5 and 9 valid target tokens (after the shift)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for rows, length, valid in ((2, 8, (7, 6)), (1, 6, (5,)), (3, 5, (4, 3, 2))):
        ids = torch.randint(1, VOCAB, (rows, length), generator=g)
        mask = torch.zeros(rows, length, dtype=torch.long)
        for r, v in enumerate(valid):
            mask[r, : v + 1] = 1
        labels = ids.masked_fill(mask == 0, -100)
        out.append({"input_ids": ids, "attention_mask": mask, "labels": labels})
    return out


def params_of(model):
    return [p for p in model.parameters() if p.requires_grad]


def token_mean_loss(model, batches):
    """Σ over all valid shifted tokens of the dataset / their number (written from the logits)."""
    total, count = 0.0, 0
    for b in batches:
        logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], use_cache=False).logits
        labels = b["labels"][:, 1:]
        total = total + F.cross_entropy(
            logits[:, :-1].reshape(-1, VOCAB), labels.reshape(-1), ignore_index=-100, reduction="sum"
        )
        count += int((labels != -100).sum())
    return total / count


def hvp_truth(model, loss_of, V):
    params = params_of(model)
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
        grads = torch.autograd.grad(loss_of(), params, create_graph=True)
        tangents = [c.T.reshape(V.shape[1], *p.shape) for c, p in zip(V.split([p.numel() for p in params]), params)]
        hv = torch.autograd.grad(grads, params, tangents, is_grads_batched=True)
    return torch.cat([h.reshape(V.shape[1], -1) for h in hv], 1).T


def ggn_truth(model, batches, V):
    """Gv = Jᵀ A J v with A the Hessian of the token-mean loss in logit space (torch.func, from scratch)."""
    from torch.func import functional_call, jvp, vjp

    names = [n for n, p in model.named_parameters() if p.requires_grad]
    values = {n: p.detach() for n, p in model.named_parameters()}
    count = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
    out = torch.zeros_like(V)
    for b in batches:

        def logits_of(p, b=b):
            return functional_call(model, {**values, **p}, (), {"input_ids": b["input_ids"],
                                   "attention_mask": b["attention_mask"], "use_cache": False}).logits  # fmt: skip

        def loss_of_logits(z, b=b):
            return F.cross_entropy(
                z[:, :-1].reshape(-1, VOCAB), b["labels"][:, 1:].reshape(-1), ignore_index=-100, reduction="sum"
            )

        p0 = {n: values[n] for n in names}
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            z, pullback = vjp(logits_of, p0)
            for j in range(V.shape[1]):
                chunks = V[:, j].split([values[n].numel() for n in names])
                tangent = {n: c.view_as(values[n]) for n, c in zip(names, chunks)}
                Jv = jvp(logits_of, (p0,), (tangent,))[1]
                AJv = jvp(torch.func.grad(loss_of_logits), (z.detach(),), (Jv,))[1]
                g = pullback(AJv)[0]
                out[:, j] += torch.cat([g[n].reshape(-1) for n in names])
    return out / count


def assert_close(got, want, rtol=1e-8):
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= rtol * scale, f"max error {err:.2e} vs scale {scale:.2e}"


def test_gpt2_token_mean_hessian_ggn_and_split_with_default_settings():
    model, batches = gpt2(), lm_batches()
    H = Hessian(model, None, batches)
    assert H.problem.loss.unit_name == "tokens" and H.num_samples == 13 + 5 + 9
    V = torch.randn(H.shape[0], 3, dtype=DT, generator=torch.Generator().manual_seed(1))
    assert_close(H @ V, hvp_truth(model, lambda: token_mean_loss(model, batches), V))
    G = GGN(model, None, batches)
    GV = G @ V
    assert_close(GV, ggn_truth(model, batches, V))
    assert_close(H @ V, GV + Residual(model, None, batches) @ V, rtol=1e-10)  # one definition of the loss
    assert model.config.use_cache is True and model.config._attn_implementation == "sdpa"  # user settings kept


def test_gpt2_eigenvalues_equal_token_weighted_truth():
    model, batches = gpt2(), lm_batches()
    for name, p in model.named_parameters():  # curvature of one block keeps the dense truth cheap
        p.requires_grad_(name.startswith("transformer.h.1."))
    H = Hessian(model, None, batches)
    top = eigsh(H, k=2, which="LA", seed=0)
    dense = hvp_truth(model, lambda: token_mean_loss(model, batches), torch.eye(H.shape[0], dtype=DT))
    exact = torch.linalg.eigvalsh((dense + dense.T) / 2)[-2:].flip(0)
    torch.testing.assert_close(top.eigenvalues, exact, rtol=1e-8, atol=1e-10)


def test_float64_loss_is_exact_not_hf_float32_rounding():
    model, batches = gpt2(), lm_batches()
    H = Hessian(model, None, batches)
    truth = torch.autograd.grad(token_mean_loss(model, batches), params_of(model))
    assert_close(H.gradient(), torch.cat([t.reshape(-1) for t in truth]), rtol=1e-12)


def test_model_computes_its_own_loss_for_unknown_heads_and_ggn_says_what_to_do():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=VOCAB, n_positions=16)
    model = quiet(transformers.GPT2Model, cfg).double()  # a base model: no task head, no loss
    batches = [{"input_ids": torch.randint(0, VOCAB, (2, 5)), "labels": torch.randint(0, VOCAB, (2, 5))}]
    with pytest.raises(ValueError, match="returned none"):
        Hessian(model, None, batches)
    with pytest.raises(TypeError, match="is not a transformers model"):
        Hessian(nn.Linear(3, 2).double(), None, [(torch.zeros(2, 3, dtype=DT), torch.zeros(2))])


def bert_classifier(problem_type=None, num_labels=3):
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
        max_position_embeddings=16, num_labels=num_labels, problem_type=problem_type,
    )  # fmt: skip
    return quiet(transformers.BertForSequenceClassification, cfg).double().eval()


def test_bert_sequence_classifier_with_attention_mask_sample_mean():
    model = bert_classifier()
    g = torch.Generator().manual_seed(2)
    batches = []
    for rows in (3, 2):
        ids = torch.randint(1, 30, (rows, 6), generator=g)
        mask = torch.ones(rows, 6, dtype=torch.long)
        mask[0, 4:] = 0
        batches.append({"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 3, (rows,), generator=g)})
    H = Hessian(model, None, batches)
    assert H.problem.loss.unit_name == "samples" and H.num_samples == 5

    def loss():
        total = sum(F.cross_entropy(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits,
                                    b["labels"], reduction="sum") for b in batches)  # fmt: skip
        return total / 5

    V = torch.randn(H.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    assert_close(H @ V, hvp_truth(model, loss, V))


def test_vision_transformer_if_available():
    if not hasattr(transformers, "ViTForImageClassification"):
        pytest.skip("this transformers has no ViT")
    torch.manual_seed(0)
    cfg = transformers.ViTConfig(image_size=8, patch_size=4, num_channels=1, hidden_size=8, num_hidden_layers=1,
                                 num_attention_heads=2, intermediate_size=16, num_labels=3)  # fmt: skip
    model = quiet(transformers.ViTForImageClassification, cfg).double().eval()
    g = torch.Generator().manual_seed(0)
    batches = [{"pixel_values": torch.randn(4, 1, 8, 8, dtype=DT, generator=g), "labels": torch.tensor([0, 1, 2, 1])}]
    H = Hessian(model, None, batches)

    def loss():
        return F.cross_entropy(model(pixel_values=batches[0]["pixel_values"]).logits, batches[0]["labels"])

    V = torch.randn(H.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(3))
    assert_close(H @ V, hvp_truth(model, loss, V))


def test_units_tokens_for_tuples_and_custom_units():
    model, batches = gpt2(), lm_batches()
    H = Hessian(model, None, batches, units=lambda b: int(b["attention_mask"].sum()))
    assert H.num_samples == 15 + 6 + 12  # attention-mask tokens
    with pytest.raises(ValueError, match="units must be one of"):
        Hessian(model, None, batches, units="words")


def test_compiled_and_ddp_like_wrappers_are_unwrapped():
    model, batches = gpt2(), lm_batches()
    compiled = torch.compile(model)
    H, C = Hessian(model, None, batches), Hessian(compiled, None, batches)
    assert C.problem.names == H.problem.names and not any(n.startswith("_orig_mod") for n in C.problem.names)
    V = torch.randn(H.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(C @ V, H @ V, rtol=0, atol=0)


def test_gradient_checkpointing_is_refused_before_work_with_the_fix():
    model = gpt2()
    model.gradient_checkpointing_enable()
    with pytest.raises(ValueError, match="gradient_checkpointing_disable"):
        Hessian(model, None, lm_batches())


@pytest.mark.parametrize("dtype,richardson", [(torch.float64, False), (torch.float32, False), (torch.float64, True)])
def test_finite_difference_product_within_its_stated_error(dtype, richardson):
    model, batches = gpt2(dtype), lm_batches()
    exact = Hessian(gpt2(torch.float64), None, batches)
    fd = Hessian(model, None, batches, method="fd_richardson" if richardson else "fd")
    V = torch.randn(exact.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(4))
    # and the top eigenvector: a central difference errs most along the directions of highest curvature
    V = torch.cat([V, eigsh(exact, k=1, which="LA", seed=0).eigenvectors], dim=1)
    want, got = exact @ V, (fd @ V.to(dtype)).double()
    err = ((got - want).norm(dim=0) / want.norm(dim=0)).max().item()
    assert fd.product_method == "fd" and fd.fd_error is not None
    assert err <= 10 * fd.fd_error + 10 * torch.finfo(dtype).eps ** 0.5, (err, fd.fd_error)


class NoDoubleBackward(torch.autograd.Function):
    """tanh whose backward is not differentiable (like a fused kernel)."""

    @staticmethod
    def forward(ctx, x):
        y = torch.tanh(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * (1 - y * y)


class FusedNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 5), nn.Linear(5, 2)

    def forward(self, x):
        return self.b(NoDoubleBackward.apply(self.a(x)))


def test_auto_falls_back_to_finite_differences_loudly_and_exact_refuses():
    torch.manual_seed(0)
    model = FusedNet().double()
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(6, 3, dtype=DT, generator=g), torch.arange(6) % 2)]
    with pytest.warns(RuntimeWarning, match="using finite-difference products"):
        H = Hessian(model, nn.CrossEntropyLoss(), data)
        v = torch.randn(H.shape[0], dtype=DT, generator=g)
        hv = H @ v
    reference = Hessian(nn.Sequential(model.a, nn.Tanh(), model.b), nn.CrossEntropyLoss(), data) @ v
    assert H.product_method == "fd" and (hv - reference).norm() <= 10 * H.fd_error * reference.norm() + 1e-7
    with pytest.raises(ProductError, match="every product strategy failed"):
        Hessian(model, nn.CrossEntropyLoss(), data, method="exact") @ v


def test_probe_batches_materialises_any_loader():
    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            for i in range(100):
                yield {"input_ids": torch.full((4,), i), "labels": torch.full((4,), i)}

    loader = torch.utils.data.DataLoader(Stream(), batch_size=2)
    fixed = probe_batches(loader, 3)
    assert isinstance(fixed, list) and len(fixed) == 3 and fixed[2]["input_ids"][0, 0].item() == 4
    with pytest.raises(ValueError, match="at least 1"):
        probe_batches(loader, 0)


@pytest.mark.parametrize("strategy", ["autograd", "cached"])
def test_double_backward_through_a_once_differentiable_function_is_refused_not_wrong(strategy):
    """Before this check the double-backward strategies silently dropped second-order terms (76% error)."""
    torch.manual_seed(0)
    model = FusedNet().double()
    data = [(torch.randn(6, 3, dtype=DT), torch.arange(6) % 2)]
    H = Hessian(model, nn.CrossEntropyLoss(), data, strategy=strategy, probe=False)
    with pytest.raises(RuntimeError, match="double backward is not supported"):
        H @ torch.randn(H.shape[0], dtype=DT)


def test_tuple_batches_give_the_task_loss_of_dict_batches():
    # (input_ids, labels) tuples, as a plain TensorDataset loader yields them, define the same
    # operator as {"input_ids", "labels"} dicts: causal LM (token units) and a sequence classifier.
    for model, batches in ((gpt2(), lm_batches()), (bert_classifier(), None)):
        if batches is None:
            g = torch.Generator().manual_seed(4)
            batches = [{"input_ids": torch.randint(1, 30, (r, 6), generator=g),
                        "labels": torch.randint(0, 3, (r,), generator=g)} for r in (3, 2)]  # fmt: skip
        dicts = [{"input_ids": b["input_ids"], "labels": b["labels"]} for b in batches]
        tuples = [(b["input_ids"], b["labels"]) for b in batches]
        Hd, Ht = Hessian(model, None, dicts), Hessian(model, None, tuples)
        assert Ht.problem.loss.unit_name == Hd.problem.loss.unit_name and Ht.num_samples == Hd.num_samples
        V = torch.randn(Hd.shape[0], 2, dtype=DT, generator=torch.Generator().manual_seed(5))
        assert_close(Ht @ V, Hd @ V, rtol=1e-12)
        assert_close(GGN(model, None, tuples) @ V, GGN(model, None, dicts) @ V, rtol=1e-12)
