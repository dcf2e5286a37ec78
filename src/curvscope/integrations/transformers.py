"""``curvscope.integrations.transformers.CurvatureCallback``: the HF Trainer callback (see :mod:`.hf_trainer`).

Absolute imports (PEP 328) make ``import transformers`` inside curvscope resolve to the
HuggingFace package, never to this module.
"""

from curvscope.integrations.hf_trainer import STATE_FILE, CurvatureCallback

__all__ = ["STATE_FILE", "CurvatureCallback"]
