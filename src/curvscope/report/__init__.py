"""curvscope.report."""
