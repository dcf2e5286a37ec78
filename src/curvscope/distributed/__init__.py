"""curvscope.distributed."""
