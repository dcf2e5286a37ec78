"""Checks on what an operator's ``@`` returned, with the fix in the message.

An operator from another library (or a curvature operator fed a NaN batch, or float16 products
that overflow) can return the wrong shape or non-finite numbers; an estimator must say so
instead of failing deep inside a factorisation or returning ``nan`` with a trusted status.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_product(X: Tensor, Y: Tensor, what: str) -> Tensor:
    """``Y = A @ X`` itself, after checking its shape and that it is finite.

    Raises:
        ValueError: ``Y`` is not a tensor of ``X``'s shape.
        ArithmeticError: ``Y`` holds NaN or inf.

    Example:
        >>> import torch
        >>> check_product(torch.ones(3, 2), torch.full((3, 2), float("nan")), "trace")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ArithmeticError: trace: the operator's products contain NaN or inf (2 of 2 columns): ...
    """
    if not isinstance(Y, Tensor) or tuple(Y.shape) != tuple(X.shape):
        got = tuple(Y.shape) if hasattr(Y, "shape") else type(Y).__name__
        raise ValueError(
            f"{what}: the operator's A @ X returned shape {got} for X of shape {tuple(X.shape)}: fix the "
            f"operator's __matmul__ (it must return a torch tensor of the input's shape)"
        )
    finite = torch.isfinite(Y).reshape(Y.shape[0], -1).all(0)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ArithmeticError(
            f"{what}: the operator's products contain NaN or inf ({bad} of {finite.numel()} columns): find where "
            f"they overflow (a NaN batch, float16 overflow, a diverged model); no estimate is returned"
        )
    return Y


def check_finite(values: Tensor, what: str) -> None:
    """Raise :class:`ArithmeticError` when quantities computed from the products (Lanczos ``α, β``) are not finite."""
    if not bool(torch.isfinite(values).all()):
        raise ArithmeticError(
            f"{what}: the operator's products contain NaN or inf: find where they overflow (a NaN batch, "
            f"float16 overflow, a diverged model); no estimate is returned"
        )
