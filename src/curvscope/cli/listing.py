"""``curvscope list``: what can be named on the command line."""

from __future__ import annotations


def print_listing() -> None:
    """Print experiments, datasets and models with one line each."""
    from curvscope.data import list_datasets
    from curvscope.experiments import get, names
    from curvscope.models import list_models

    print("experiments (curvscope reproduce NAME):")
    for name in names():
        print(f"  {name:18s} {get(name).title}")
    print("datasets (--data NAME):")
    for name, text in list_datasets().items():
        print(f"  {name:18s} {text}")
    print(f"  {'FILE.txt|.jsonl':18s} a local text or jsonl file (analyze: the model's tokenizer, else bytes)")
    print(f"  {'pkg.module:factory':18s} a function returning a list of batches or a loader (analyze)")
    print("models (built in):")
    for name, text in list_models().items():
        print(f"  {name:18s} {text}")
    print("models (analyze --model):")
    print(f"  {'pkg.module:factory':18s} a function returning an nn.Module (weights: --checkpoint)")
    print(f"  {'hf:PATH':18s} a local HuggingFace model directory (config.json + safetensors; task loss)")
