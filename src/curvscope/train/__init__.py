"""curvscope.train."""
