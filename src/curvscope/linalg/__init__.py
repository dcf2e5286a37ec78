"""Matrix-free linear algebra over the operator protocol (``A @ X``, ``shape``, ``dtype``, ``device``).

- :func:`lanczos` — Lanczos with full reorthogonalisation, single or block of starts;
- :func:`eigsh` — extreme eigenpairs by thick-restart Lanczos with residual certificates
  (:func:`power_iteration` as a baseline);
- :func:`spectral_density` — SLQ and KPM densities;
- :func:`trace`, :func:`diagonal` — Hutchinson, Hutch++, XTrace / XDiag estimators;
- :mod:`~curvscope.linalg.storage` — where Krylov bases live (device, host, disk);
- :mod:`~curvscope.linalg.precision` — the one rule for ``work_dtype="auto"`` and the default
  tolerance (``sqrt(eps)`` of the arithmetic, or 10 x the operator's measured noise floor).

Every algorithm takes the same keywords with the same meaning: ``seed`` (int or
``torch.Generator``), ``progress`` (``None``: a bar only on a terminal), ``block_size`` (most
vectors in one product), ``work_dtype`` (``"auto"``) and ``checkpoint`` (a resumable-state file,
refused for another operator); a keyword without meaning for an algorithm is refused, never
ignored. Results carry a :class:`~curvscope.common.Status` and a message.
"""

from curvscope.linalg.deflation import DeflatedDensity, deflated_density
from curvscope.linalg.density import Density, spectral_density, wasserstein1
from curvscope.linalg.eigsh import EigshResult, eigsh
from curvscope.linalg.lanczos import LanczosResult, lanczos
from curvscope.linalg.power import power_iteration
from curvscope.linalg.storage import BasisStorage, DeviceStorage, DiskStorage, HostStorage, make_storage
from curvscope.linalg.trace import DiagonalResult, TraceResult, diagonal, trace

__all__ = [
    "BasisStorage",
    "DeflatedDensity",
    "Density",
    "DeviceStorage",
    "DiagonalResult",
    "DiskStorage",
    "EigshResult",
    "HostStorage",
    "LanczosResult",
    "TraceResult",
    "deflated_density",
    "diagonal",
    "eigsh",
    "lanczos",
    "make_storage",
    "power_iteration",
    "spectral_density",
    "trace",
    "wasserstein1",
]
