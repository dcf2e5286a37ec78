"""curvscope.linalg."""
