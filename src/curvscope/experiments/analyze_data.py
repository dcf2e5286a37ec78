"""What ``curvscope analyze`` reads: HF model directories, text/jsonl files and batch factories.

- ``--model hf:PATH``: a local HuggingFace model directory (``config.json`` + safetensors), loaded
  with ``local_files_only=True`` and ``HF_HUB_OFFLINE=1`` (never the network); the class is the
  ``AutoModelFor…`` matching ``config.architectures`` (fallback ``AutoModelForCausalLM``).
  ``transformers`` is imported only here, only for this path.
- ``--data FILE.txt|FILE.jsonl``: one token stream (jsonl: the ``text`` field of each row, rows
  joined by the tokenizer's EOS, or a newline for bytes), cut into sequences of ``seq_len``; batches
  ``{"input_ids", "attention_mask", "labels"}`` with ``-100`` labels on the padding of the last,
  short sequence. Tokens come from the model directory's tokenizer when it has one, else raw bytes
  (the model's vocabulary must then hold ≥ 256 tokens).
- ``--data pkg.module:factory``: the factory returns a list of batches or a loader; a loader is
  materialised with :func:`curvscope.data.probe_batches`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from curvscope.operators.fingerprint import tensors_digest

HF_EXTRA = "pip install 'curvscope[hf]'"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")
# config.architectures suffix -> transformers Auto class
_AUTO_CLASSES = (
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForImageClassification", "AutoModelForImageClassification"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForSeq2SeqLM", "AutoModelForSeq2SeqLM"),
    ("ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
)
TEXT_SUFFIXES = (".txt", ".text", ".jsonl", ".md")
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def _transformers():
    try:
        import transformers
    except ImportError as err:
        raise RuntimeError(
            f"--model hf:PATH needs the transformers library ({err}); install it with {HF_EXTRA}"
        ) from err
    return transformers


@contextmanager
def _offline():
    """``HF_HUB_OFFLINE=1`` for the duration of a load (restored afterwards)."""
    old = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old


def hf_model_dir(spec: str) -> Path:
    """The directory of ``hf:PATH``, checked: it exists and holds ``config.json`` and safetensors weights."""
    path = Path(spec[len("hf:") :]).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"--model {spec}: {path} is not a directory (hf:PATH names a local model folder)")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"--model {spec}: {path} has no config.json, so it is not a HuggingFace model directory "
            "(save one with model.save_pretrained(PATH))"
        )
    if not safetensors_files(path):
        raise FileNotFoundError(
            f"--model {spec}: {path} has no *.safetensors weights (save with model.save_pretrained(PATH), "
            "which writes safetensors by default)"
        )
    return path


def safetensors_files(path: Path) -> list[Path]:
    """The ``*.safetensors`` files of a model directory, sorted by name."""
    return sorted(p for p in path.glob("*.safetensors") if p.is_file())


def load_hf_model(spec: str) -> torch.nn.Module:
    """``hf:PATH`` → the model, from local files only (config, safetensors weights)."""
    path = hf_model_dir(spec)
    with _offline():  # before the import too: huggingface_hub reads HF_HUB_OFFLINE when imported
        tf = _transformers()
        config = tf.AutoConfig.from_pretrained(str(path), local_files_only=True)
        archs = list(getattr(config, "architectures", None) or [])
        auto = next((cls for a in archs for suffix, cls in _AUTO_CLASSES if a.endswith(suffix)), "AutoModelForCausalLM")
        model = getattr(tf, auto).from_pretrained(str(path), local_files_only=True, use_safetensors=True)
    return model.eval()


def weights_sha256(path: Path) -> str:
    """sha256 over the model directory's safetensors files (names and bytes, in sorted order)."""
    from curvscope.experiments.analyze import file_sha256

    h = hashlib.sha256()
    for p in safetensors_files(path):
        h.update(f"{p.name}:{file_sha256(p)}\n".encode())
    return h.hexdigest()


def data_kind(spec: str) -> str:
    """``"text"`` (an existing file), ``"factory"`` (``pkg.module:factory``) or ``"dataset"``."""
    from curvscope.data import list_datasets

    if Path(spec).is_file():
        return "text"
    if Path(spec).suffix.lower() in TEXT_SUFFIXES:
        raise FileNotFoundError(f"--data {spec}: no such file")
    path_formats = {k[: -len(":PATH")] for k in list_datasets() if k.endswith(":PATH")}
    if _FACTORY.match(spec) and spec.split(":", 1)[0] not in path_formats:
        return "factory"
    return "dataset"


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """The text of a file, or the ``text_field`` of every row of a ``.jsonl`` file."""
    if path.suffix.lower() != ".jsonl":
        return [path.read_text(encoding="utf-8", errors="replace")]
    texts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise ValueError(
                f"{path} line {i}: expected a JSON object with a string field {text_field!r} (--text-field)"
            )
        texts.append(row[text_field])
    if not texts:
        raise ValueError(f"{path} holds no rows")
    return texts


def _tokenize(texts: list[str], model_dir: Path | None, vocab_size: int | None) -> tuple[torch.Tensor, str]:
    """One token stream and the tokenizer's name (``"bytes"`` without a tokenizer in ``model_dir``)."""
    if model_dir is not None and any((model_dir / f).is_file() for f in TOKENIZER_FILES):
        with _offline():
            tf = _transformers()
            tok = tf.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        sep = [tok.eos_token_id] if tok.eos_token_id is not None else []
        ids: list[int] = []
        for i, text in enumerate(texts):
            ids += (sep if i else []) + tok(text, add_special_tokens=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long), f"tokenizer:{type(tok).__name__}"
    if vocab_size is not None and vocab_size < 256:
        raise ValueError(
            f"the model directory has no tokenizer, so the text is read as raw bytes (256 token ids), but the "
            f"model's vocabulary has only {vocab_size} tokens: save a tokenizer next to the model "
            "(tokenizer.save_pretrained(PATH)) or use a model with vocab_size >= 256"
        )
    raw = "\n".join(texts).encode("utf-8")
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).long(), "bytes"


def text_file_batches(
    path: str | Path,
    model_dir: Path | None,
    vocab_size: int | None,
    *,
    seq_len: int = 128,
    batch_size: int = 8,
    num_samples: int | None = None,
    text_field: str = "text",
) -> tuple[list[dict], str]:
    """Causal-LM batches ``{"input_ids", "attention_mask", "labels"}`` from a text or jsonl file.

    Returns:
        The batches (at most ``num_samples`` sequences of ``seq_len`` tokens) and the tokenizer's name.
    """
    if seq_len < 2 or batch_size < 1:
        raise ValueError(f"need --seq-len >= 2 and --batch-size >= 1, got {seq_len} and {batch_size}")
    tokens, tokenizer = _tokenize(read_texts(Path(path), text_field), model_dir, vocab_size)
    if tokens.numel() == 0:
        raise ValueError(f"{path} holds no text")
    if vocab_size is not None and int(tokens.max()) >= vocab_size:
        raise ValueError(
            f"{path}: the {tokenizer} token ids reach {int(tokens.max())}, beyond the model's vocabulary "
            f"({vocab_size} tokens): the tokenizer does not belong to this model"
        )
    n_seq = -(-tokens.numel() // seq_len)
    if num_samples is not None:
        n_seq = min(n_seq, num_samples)
        tokens = tokens[: n_seq * seq_len]
    ids = torch.zeros(n_seq * seq_len, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[: tokens.numel()], mask[: tokens.numel()] = tokens, 1
    ids, mask = ids.view(n_seq, seq_len), mask.view(n_seq, seq_len)
    labels = ids.masked_fill(mask == 0, -100)
    out = [
        {"input_ids": ids[i : i + batch_size], "attention_mask": mask[i : i + batch_size],
         "labels": labels[i : i + batch_size]}
        for i in range(0, n_seq, batch_size)
    ]  # fmt: skip
    return out, tokenizer


def factory_batches(spec: str, num_batches: int | None) -> list:
    """The batches ``pkg.module:factory()`` returns (a list, or a loader read for ``num_batches`` batches)."""
    from curvscope.data import probe_batches
    from curvscope.experiments.checkpoint import import_factory

    made = import_factory(spec)()
    if isinstance(made, (list, tuple)):
        out = list(made)
        return out[:num_batches] if num_batches is not None else out
    if num_batches is None:
        try:
            num_batches = len(made)
        except TypeError:
            raise ValueError(
                f"--data {spec} returned a {type(made).__name__} without a length: pass --num-batches N"
            ) from None
    return probe_batches(made, num_batches)


def batches_digest(batches: list) -> str:
    """A hash of every tensor in the batches (part of the run's fingerprint)."""
    flat: dict[str, torch.Tensor] = {}

    def walk(prefix: str, obj: Any) -> None:
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        elif isinstance(obj, dict):
            for k in sorted(obj):
                walk(f"{prefix}.{k}", obj[k])
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}.{i}", v)

    walk("b", batches)
    return tensors_digest(flat)
