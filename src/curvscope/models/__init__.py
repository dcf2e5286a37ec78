"""curvscope.models."""
