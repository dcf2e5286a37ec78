"""Small typed results shared by linalg and metrics.

:class:`FloatResult` is the base of results that *are* a number with context attached (an
overlap with its chance level, a negative mass with the band it ignored): a frozen dataclass
whose first field is ``value`` and which is also a ``float`` equal to it, so
``mask_overlap(m, Q) / chance``, ``round(r, 3)``, ``json.dumps`` and ``torch.tensor([r])`` keep
working where a bare float was returned before.
"""

from __future__ import annotations

from typing import Any


class FloatResult(float):
    """A ``float`` equal to the result's ``value`` field; subclasses are ``@dataclass(frozen=True, eq=False)``.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass(frozen=True, eq=False)
        ... class Ratio(FloatResult):
        ...     value: float
        ...     note: str = ""
        >>> r = Ratio(0.25, "a quarter")
        >>> r * 4, float(r), r.note, r == 0.25
        (1.0, 0.25, 'a quarter', True)
    """

    def __new__(cls, value: float, *args: Any, **kwargs: Any) -> FloatResult:
        """The float part is ``value``; the dataclass ``__init__`` sets the fields."""
        return float.__new__(cls, value)

    def __float__(self) -> float:
        return float(self.value)  # type: ignore[attr-defined]

    def __reduce__(self) -> tuple:
        from dataclasses import fields

        return (_rebuild, (type(self), {f.name: getattr(self, f.name) for f in fields(self)}))  # type: ignore[arg-type]


def _rebuild(cls: type, values: dict) -> Any:
    return cls(**values)
