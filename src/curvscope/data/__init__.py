"""curvscope.data."""
