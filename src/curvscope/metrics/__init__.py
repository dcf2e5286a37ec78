"""curvscope.metrics."""
