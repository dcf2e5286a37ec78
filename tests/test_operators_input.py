"""Bad input: a clear error, raised before expensive work — one test each."""

import pytest
import torch
from torch import nn

from curvscope import GGN, Hessian, LinearOperator
from curvscope.operators import DenseOperator, NondeterministicProductError
from curvscope.operators.dense import dense_hessian

DT = torch.float64


@pytest.fixture
def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(DT)


def data(n=6, batches=2):
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(n, 3, dtype=DT, generator=g), torch.arange(n) % 2) for _ in range(batches)]


def test_loss_not_a_scalar(mlp):
    with pytest.raises(ValueError, match=r"shape \(6,\), expected a scalar: pass reduction='mean'"):
        Hessian(mlp, nn.CrossEntropyLoss(reduction="none"), data())


def test_loss_reduction_mismatch(mlp):
    with pytest.raises(ValueError, match="pass loss_reduction='sum'"):
        Hessian(mlp, nn.CrossEntropyLoss(reduction="sum"), data())


def test_sum_reduction_is_weighted_like_mean(mlp):
    d = data(5, 3)
    A = Hessian(mlp, nn.CrossEntropyLoss(reduction="sum"), d, loss_reduction="sum").to_dense()
    B = Hessian(mlp, nn.CrossEntropyLoss(), d).to_dense()
    assert torch.allclose(A, B, atol=1e-12)


def test_no_trainable_parameters(mlp):
    for p in mlp.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        Hessian(mlp, nn.CrossEntropyLoss(), data())


def test_pattern_matches_nothing(mlp):
    with pytest.raises(ValueError, match=r"pattern 'encoder\.\*' matches no parameter; names are: 0.weight"):
        Hessian(mlp, nn.CrossEntropyLoss(), data(), params=["encoder.*"])


def test_glob_pattern_selects_in_model_order(mlp):
    op = Hessian(mlp, nn.CrossEntropyLoss(), data(), params=["*.bias", "0.weight"])
    assert op.problem.names == ["0.weight", "0.bias", "2.bias"]


def test_empty_data(mlp):
    with pytest.raises(ValueError, match="data is empty"):
        Hessian(mlp, nn.CrossEntropyLoss(), [])


def test_one_shot_iterator(mlp):
    with pytest.raises(TypeError, match="one-shot iterator"):
        Hessian(mlp, nn.CrossEntropyLoss(), (b for b in data()))


def test_batch_of_wrong_structure(mlp):
    with pytest.raises(TypeError, match=r"a batch must be a tuple/list \(inputs, targets\) or a dict"):
        Hessian(mlp, nn.CrossEntropyLoss(), [torch.randn(4, 3, dtype=DT)])


@pytest.mark.parametrize("where", ["inputs", "outputs", "loss"])
def test_nan_names_the_batch(mlp, where):
    d = data(6, 3)
    x, y = d[2]
    if where == "inputs":
        x = x.clone()
        x[0, 0] = float("nan")
        d[2] = (x, y)
        match = "batch 2: the inputs contain NaN"
    elif where == "outputs":
        x = x.clone()
        x[1] = 1e308  # finite input, overflowing pre-activations → inf / nan logits
        d[2] = (x, y)
        mlp = nn.Sequential(nn.Linear(3, 2)).to(DT)
        with torch.no_grad():
            mlp[0].weight.fill_(4.0)
        match = "batch 2: the model outputs contain NaN or Inf"
    else:
        mse = [(a, torch.randn(a.shape[0], 2, dtype=DT)) for a, _ in d]
        mse[2] = (mse[2][0], torch.full((6, 2), float("inf"), dtype=DT))
        with pytest.raises(ValueError, match="batch 2: the loss is"):
            Hessian(mlp, nn.MSELoss(), mse)
        return
    with pytest.raises(ValueError, match=match):
        Hessian(mlp, nn.CrossEntropyLoss(), d)


def test_vector_of_wrong_length_dtype_device(mlp):
    H = Hessian(mlp, nn.CrossEntropyLoss(), data())
    D = H.shape[0]
    with pytest.raises(ValueError, match=rf"expected a vector \[{D}\] or a block \[{D}, K\], got shape \(5,\)"):
        H @ torch.zeros(5, dtype=DT)
    with pytest.raises(TypeError, match=r"convert it with .to\(torch.float64\)"):
        H @ torch.zeros(D, dtype=torch.float32)
    with pytest.raises(ValueError, match=r"move it with \.to"):
        H @ torch.zeros(D, dtype=DT, device="meta")


def test_model_and_data_on_different_devices(mlp):
    d = [(torch.zeros(4, 3, dtype=DT, device="meta"), torch.zeros(4, dtype=torch.long, device="meta"))]
    with pytest.raises(ValueError, match=r"batch 0 is on meta but the model/operator is on cpu: .*move_batches=True"):
        Hessian(mlp, nn.CrossEntropyLoss(), d)


def test_too_large_for_dense(mlp):
    H = Hessian(mlp, nn.CrossEntropyLoss(), data())
    with pytest.raises(MemoryError, match=r"needs .* GiB; it is refused above max_dim=10"):
        H.to_dense(max_dim=10)
    with pytest.raises(MemoryError, match="refused above max_params=10"):
        dense_hessian(mlp, nn.CrossEntropyLoss(), data(), max_params=10)


def test_non_symmetric_result_is_caught():
    A = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=DT)
    with pytest.raises(ArithmeticError, match="not symmetric"):
        DenseOperator(A, check_symmetric=True)
    with pytest.raises(ArithmeticError, match="not symmetric"):
        DenseOperator(A).check_symmetric()
    assert DenseOperator(A + A.T).check_symmetric() < 1e-12


def test_curvature_operators_pass_the_symmetry_check(mlp):
    for Op in (Hessian, GGN):
        assert Op(mlp, nn.CrossEntropyLoss(), data()).check_symmetric() < 1e-10


def test_dropout_in_train_mode_fails_the_determinism_probe(mlp):
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2)).to(DT)
    with pytest.warns(UserWarning, match="dropout is active"):
        H = Hessian(model, nn.CrossEntropyLoss(), data(), mode="train")
    with pytest.raises(NondeterministicProductError, match=r"dropout active \(use mode='eval'\)"):
        H @ torch.randn(H.shape[0], dtype=DT)
    # the default eval mode is deterministic, and the model's own flag is restored
    model.train()
    Hessian(model, nn.CrossEntropyLoss(), data()) @ torch.randn(H.shape[0], dtype=DT)
    assert model.training and model[1].training


def test_operator_protocol_rejects_non_tensors():
    with pytest.raises(TypeError, match="multiplies torch tensors"):
        DenseOperator(torch.eye(2, dtype=DT)) @ [1.0, 2.0]
    assert issubclass(DenseOperator, LinearOperator)


def test_memory_guard_refuses_a_batch_that_cannot_fit(mlp, monkeypatch):
    import curvscope.operators.curvature as curvature

    H = Hessian(mlp, nn.CrossEntropyLoss(), data())
    assert H.problem.activation_bytes > 0
    monkeypatch.setattr(curvature, "available_bytes", lambda device: 10)
    with pytest.raises(MemoryError, match="try: a smaller batch size"):
        H @ torch.randn(H.shape[0], dtype=DT)


def test_memory_guard_narrows_wide_blocks(mlp, monkeypatch):
    import curvscope.operators.curvature as curvature

    H = Hessian(mlp, nn.CrossEntropyLoss(), data())
    per_vector = curvature.ACTIVATION_COPIES * H.problem.activation_bytes
    monkeypatch.setattr(curvature, "available_bytes", lambda device: int(2.5 * per_vector / 0.9))
    assert H._block_width(32) == 2
    V = torch.randn(H.shape[0], 5, dtype=DT)
    monkeypatch.undo()
    torch.testing.assert_close(H @ V, torch.stack([H @ V[:, i] for i in range(5)], 1))


def test_a_probe_against_float64_says_which_reference_and_names_precision():
    """A float32 operator is probed against float64: the error carries the defect and names both causes."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Tanh(), nn.Linear(8, 2))
    with pytest.warns(UserWarning, match="dropout is active"):
        H = Hessian(model, nn.CrossEntropyLoss(), [(torch.randn(6, 3), torch.arange(6) % 2)], mode="train")
    with pytest.raises(NondeterministicProductError, match="differs from the float64 product") as info:
        H @ torch.randn(H.shape[0])
    assert info.value.reference == "float64" and info.value.defect > 3e-4
    assert "dtype=torch.float64" in str(info.value) and "dropout active (use mode='eval')" in str(info.value)
