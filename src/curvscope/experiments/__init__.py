"""curvscope.experiments."""
