"""``curvscope analyze --model hf:DIR``: a local HF model directory, text/jsonl files, batch factories.

The model is a 2-layer GPT-2 (vocab 256, so raw bytes are valid tokens) saved with
``save_pretrained`` (safetensors) into a temporary folder without a tokenizer; the truth is the
Hessian built in-process with ``Hessian(model, None, batches)`` on batches cut here by hand.
"""

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from curvscope import Hessian, eigsh
from curvscope.cli.main import main
from curvscope.io import load_tensors

transformers = pytest.importorskip("transformers")
HERE = Path(__file__).resolve().parent
TEXT = "The loss landscape of a small transformer, measured byte by byte.\n" * 3  # 198 bytes
SEQ, BATCH = 16, 4


def gpt2():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=8, vocab_size=256, n_positions=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("hf") / "tiny-gpt2"
    gpt2().save_pretrained(path)
    assert list(path.glob("*.safetensors")) and not (path / "tokenizer.json").exists()
    return path


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("text") / "corpus.txt"
    path.write_text(TEXT)
    return path


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread (restored after): tiny products on a shared, loaded machine run ~10x faster."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def tests_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))  # --data cli_models:...


def byte_batches(text: str, seq: int, batch: int) -> list[dict]:
    """The batches the CLI should cut: byte ids, the last sequence padded (mask 0, label -100)."""
    raw = torch.tensor(list(text.encode()), dtype=torch.long)
    n = -(-raw.numel() // seq)
    ids, mask = torch.zeros(n * seq, dtype=torch.long), torch.zeros(n * seq, dtype=torch.long)
    ids[: raw.numel()], mask[: raw.numel()] = raw, 1
    ids, mask = ids.view(n, seq), mask.view(n, seq)
    labels = ids.masked_fill(mask == 0, -100)
    return [
        {"input_ids": ids[i : i + batch], "attention_mask": mask[i : i + batch], "labels": labels[i : i + batch]}
        for i in range(0, n, batch)
    ]


def in_process_top(model_dir: Path, batches: list, k: int, params=None) -> tuple[torch.Tensor, int]:
    model = transformers.GPT2LMHeadModel.from_pretrained(model_dir, local_files_only=True).double().eval()
    H = Hessian(model, None, batches, params=params)
    return eigsh(H, k=k, which="LA", seed=0).eigenvalues.double(), H.shape[0]


def run_args(model_dir: Path, data, out: Path, *extra: str) -> list[str]:
    return ["analyze", "--model", f"hf:{model_dir}", "--data", str(data), "--top-k", "3", "--dtype", "float64",
            "--quiet", "--out", str(out), *extra]  # fmt: skip


def results_of(out: Path) -> tuple[dict, torch.Tensor]:
    res = json.loads((out / "results.json").read_text())
    return res, load_tensors(out / "arrays" / "top.safetensors")[0]["eigenvalues"]


def test_hf_dir_and_text_file_match_the_in_process_hessian(tmp_path, model_dir, text_file):
    """The console command end to end; eigenvalues equal Hessian(model, None, batches) on the same batches."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "curvscope", *run_args(model_dir, text_file, out, "--seq-len", str(SEQ),
           "--batch-size", str(BATCH), "--trace")]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "report:" in res.stdout and "INITIALISATION" not in res.stderr
    results, top = results_of(out)
    m = results["metrics"]
    assert m["units"] == "tokens" and m["params"] == "all trainable"
    assert m["num_samples"] == len(TEXT) - 13  # one target token fewer than real tokens per sequence
    assert "trace_H" in m and len(m["model_weights_sha256"]) == 64
    fp = json.loads((out / "config.json").read_text())
    assert fp["units"] == "auto" and fp["seq_len"] == SEQ and fp["loss"] == "task"
    expected, D = in_process_top(model_dir, byte_batches(TEXT, SEQ, BATCH), 3)
    assert m["num_parameters"] == D
    torch.testing.assert_close(top, expected, rtol=1e-8, atol=1e-10)


def test_params_glob_factory_loader_and_jsonl(tmp_path, model_dir):
    """--params restricts D; --data pkg.mod:factory (a loader, read for --num-batches); jsonl with --text-field."""
    from cli_models import lm_batches, lm_loader

    out = tmp_path / "block0"
    argv = run_args(model_dir, "cli_models:lm_loader", out, "--num-batches", "2", "--params", "transformer.h.0.*")
    argv[argv.index("--top-k") + 1] = "2"
    assert main([*argv[:5], "--units", "tokens", *argv[5:]]) == 0
    results, top = results_of(out)
    loader = lm_loader()
    expected, D = in_process_top(model_dir, [next(loader), next(loader)], 2, params=["transformer.h.0.*"])
    assert results["metrics"]["num_parameters"] == D < sum(p.numel() for p in gpt2().parameters())
    assert results["metrics"]["params"] == ["transformer.h.0.*"] and results["metrics"]["units"] == "tokens"
    torch.testing.assert_close(top, expected, rtol=1e-8, atol=1e-10)

    # a factory returning a list, and jsonl rows (bytes joined by newlines): the loss units read tell the data
    assert main(run_args(model_dir, "cli_models:lm_batches", tmp_path / "list", "--top-k", "0")) == 0
    targets = sum(int((b["labels"][:, 1:] != -100).sum()) for b in lm_batches())
    assert results_of_metrics(tmp_path / "list")["num_samples"] == targets

    rows = tmp_path / "rows.jsonl"
    rows.write_text("\n".join(json.dumps({"body": t, "id": i}) for i, t in enumerate(TEXT.splitlines())))
    argv = run_args(model_dir, rows, tmp_path / "jsonl", "--text-field", "body", "--seq-len", "16", "--top-k", "0")
    assert main(argv) == 0
    joined = "\n".join(TEXT.splitlines()).encode()
    assert results_of_metrics(tmp_path / "jsonl")["num_samples"] == len(joined) - -(-len(joined) // 16)


def results_of_metrics(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())["metrics"]


def test_hf_errors_are_clear(tmp_path, model_dir, text_file, capsys, monkeypatch):
    bare = tmp_path / "no-config"
    bare.mkdir()
    shutil.copy(next(model_dir.glob("*.safetensors")), bare)
    assert main(run_args(bare, text_file, tmp_path / "a")) == 2
    err = capsys.readouterr().err
    assert "no config.json" in err and "not a HuggingFace model directory" in err
    assert main(run_args(model_dir, tmp_path / "rows.jsonl", tmp_path / "b")) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(run_args(model_dir, "cli_models:lm_loader", tmp_path / "c")) == 2
    assert "--num-batches" in capsys.readouterr().err

    small = tmp_path / "small-vocab"
    cfg = transformers.GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=100, n_positions=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformers.GPT2LMHeadModel(cfg).save_pretrained(small)
    assert main(run_args(small, text_file, tmp_path / "d")) == 2
    assert "raw bytes" in capsys.readouterr().err

    monkeypatch.setitem(sys.modules, "transformers", None)  # as if it were not installed
    assert main(run_args(model_dir, text_file, tmp_path / "e")) == 2
    assert "pip install 'curvscope[hf]'" in capsys.readouterr().err


@pytest.mark.skipif(not (Path(sys.executable).parent / "torchrun").exists(), reason="torchrun not installed")
def test_hf_analyze_under_torchrun_equals_one_process(tmp_path, model_dir, text_file):
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("--seq-len", str(SEQ), "--batch-size", "2", "--top-k", "1")
    assert main(run_args(model_dir, text_file, one, *extra)) == 0
    env = {**os.environ, "PYTHONPATH": str(HERE), "OMP_NUM_THREADS": "1"}
    cmd = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node=2", "--standalone", "-m", "curvscope",
           *run_args(model_dir, text_file, two, *extra)]  # fmt: skip
    res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    (a, ta), (b, tb) = results_of(one), results_of(two)
    assert a["metrics"]["num_samples"] == b["metrics"]["num_samples"] == len(TEXT) - 13
    torch.testing.assert_close(tb, ta, rtol=1e-9, atol=1e-12)


def test_changed_weights_or_text_refuse_to_resume(tmp_path, model_dir, text_file, capsys):
    """The fingerprint holds the model directory's safetensors hash and the data file's sha256."""
    mdir, text, out = tmp_path / "model", tmp_path / "corpus.txt", tmp_path / "run"
    shutil.copytree(model_dir, mdir)
    text.write_text(TEXT)
    argv = run_args(mdir, text, out, "--seq-len", str(SEQ), "--top-k", "1")
    assert main(argv) == 0
    results, _ = results_of(out)
    assert results["metrics"]["data"]["sha256"] and results["metrics"]["data"]["tokenizer"] == "bytes"
    text.write_text(TEXT.upper())
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "what changed" in err and "sha256" in err, err
    text.write_text(TEXT)
    model = gpt2()
    with torch.no_grad():
        model.lm_head.weight.add_(0.01)
    model.save_pretrained(mdir)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "model_weights_sha256" in err, err


def test_a_local_tokenizer_is_used_when_the_directory_has_one(tmp_path, model_dir, text_file):
    """A word-level tokenizer saved next to the model (built here, offline) replaces the bytes."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = sorted(set(TEXT.split()))
    vocab = {"[UNK]": 0, "[EOS]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    mdir = tmp_path / "with-tokenizer"
    shutil.copytree(model_dir, mdir)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]")
    fast.save_pretrained(mdir)
    out = tmp_path / "run"
    assert main(run_args(mdir, text_file, out, "--seq-len", "8", "--top-k", "1")) == 0
    results, _ = results_of(out)
    ids = fast(TEXT, add_special_tokens=False)["input_ids"]
    assert results["metrics"]["data"]["tokenizer"].startswith("tokenizer:")
    assert results["metrics"]["num_samples"] == len(ids) - -(-len(ids) // 8)  # targets: tokens - sequences
