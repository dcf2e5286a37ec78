"""curvscope.cli."""
