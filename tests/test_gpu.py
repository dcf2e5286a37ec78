"""CUDA path: the same products as on the CPU (skipped without a GPU)."""

import pytest
import torch

from curvscope import GGN, Hessian
from tiny_models import make_case

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", ["mlp_tanh", "cnn_bn", "transformer"])
def test_cuda_products_equal_cpu(name):
    case = make_case(name)
    V = torch.randn(sum(p.numel() for p in case.model.parameters()), 3, dtype=torch.float64)
    want = {Op: Op(case.model, case.loss_fn, case.batches) @ V for Op in (Hessian, GGN)}
    model = case.model.cuda()
    batches = [(x.cuda(), y.cuda()) for x, y in case.batches]
    tf32 = torch.backends.cuda.matmul.allow_tf32
    for Op, ref in want.items():
        got = (Op(model, case.loss_fn, batches) @ V.cuda()).cpu()
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    assert torch.backends.cuda.matmul.allow_tf32 == tf32  # flags restored
