"""Registers the built-in experiments (imported lazily by the registry)."""
