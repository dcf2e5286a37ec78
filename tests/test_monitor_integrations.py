"""The Lightning and HF Trainer callbacks: a short CPU training logs curvature/… through each framework."""

from __future__ import annotations

import csv
import sys
import warnings

import pytest
import torch
from torch import nn

DT = torch.float32


def _xy(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, 4, generator=g)
    return X, (X[:, 0] > 0).long()


def test_core_imports_no_framework():
    import subprocess

    code = "import curvscope.monitor, sys; print('pytorch_lightning' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_lightning_callback_logs_through_the_csv_logger(tmp_path):
    pl = pytest.importorskip("pytorch_lightning")
    from pytorch_lightning.loggers import CSVLogger

    from curvscope.integrations.lightning import CurvatureCallback

    class Module(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2))

        def forward(self, x):
            return self.net(x)

        def training_step(self, batch, _):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    X, y = _xy()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=16)
    torch.manual_seed(0)
    cb = CurvatureCallback(nn.CrossEntropyLoss(), [(X[:32], y[:32])], every=2, metrics=("top_k", "lambda_max"), k=2)
    trainer = pl.Trainer(max_steps=6, accelerator="cpu", logger=CSVLogger(tmp_path, name="run"), callbacks=[cb],
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         log_every_n_steps=1)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(Module(), loader)
    assert [r["step"] for r in cb.history] == [0, 2, 4, 6]
    rows = list(csv.DictReader(open(next(tmp_path.rglob("metrics.csv")))))
    logged = {int(r["step"]): float(r["curvature/lambda_max"]) for r in rows if r.get("curvature/lambda_max")}
    assert logged == {r["step"]: r["lambda_max"] for r in cb.history}
    assert any(r.get("curvature/top_k/persistence") for r in rows)
    state = cb.state_dict()
    assert [r["step"] for r in state["history"]] == [0, 2, 4, 6] and "top_k" in state["warm_start"]


def test_hf_trainer_callback_logs_into_the_log_history(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")  # the Trainer needs it
    from curvscope.integrations.transformers import STATE_FILE, CurvatureCallback

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cfg = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                      intermediate_size=8, max_position_embeddings=8, num_labels=2)  # fmt: skip
        model = transformers.BertForSequenceClassification(cfg)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (32, 6), generator=g)
    labels = (ids[:, 0] > 10).long()
    rows = [{"input_ids": ids[i], "labels": labels[i]} for i in range(32)]
    probe = [{"input_ids": ids[:16], "labels": labels[:16]}]
    cb = CurvatureCallback(probe, every=2)
    args = transformers.TrainingArguments(output_dir=str(tmp_path), max_steps=4, per_device_train_batch_size=8,
                                          learning_rate=1e-2, logging_steps=100, save_steps=4, report_to=[],
                                          use_cpu=True, disable_tqdm=True, seed=0)  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows)
    cb.attach(trainer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    logged = {e["step"]: e["curvature/lambda_max"] for e in trainer.state.log_history if "curvature/lambda_max" in e}
    assert logged == {r["step"]: r["lambda_max"] for r in cb.history} and sorted(logged) == [0, 2, 4]
    assert all(r["lambda_max/status"] == "converged" for r in cb.history)
    assert (tmp_path / "checkpoint-4" / STATE_FILE).exists()


class _Killed(RuntimeError):
    pass


def test_hf_trainer_resume_after_a_kill_continues_the_same_history(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from curvscope.integrations.transformers import CurvatureCallback

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 20, (48, 6), generator=g)
    labels = (ids[:, 0] > 10).long()
    rows = [{"input_ids": ids[i], "labels": labels[i]} for i in range(48)]
    probe = [{"input_ids": ids[:16], "labels": labels[:16]}]

    def trainer_for(out, kill_at=None):
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cfg = transformers.BertConfig(vocab_size=20, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=8, max_position_embeddings=8, num_labels=2)  # fmt: skip
            model = transformers.BertForSequenceClassification(cfg)
        args = transformers.TrainingArguments(output_dir=str(out), max_steps=6, per_device_train_batch_size=8,
                                              learning_rate=1e-2, logging_steps=100, save_steps=2, report_to=[],
                                              use_cpu=True, disable_tqdm=True, seed=0)  # fmt: skip

        class Kill(transformers.TrainerCallback):  # a crash after checkpoint-4 was written
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == kill_at:
                    raise _Killed(f"killed at step {kill_at}")

        trainer = transformers.Trainer(model=model, args=args, train_dataset=rows,
                                       callbacks=[Kill()] if kill_at else [])  # fmt: skip
        return trainer, CurvatureCallback(probe, every=2, k=3, metrics=("lambda_max", "top_k")).attach(trainer)

    def train(trainer, **kw):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer.train(**kw)

    whole, cb_whole = trainer_for(tmp_path / "whole")
    train(whole)
    killed, _ = trainer_for(tmp_path / "run", kill_at=5)
    with pytest.raises(_Killed):
        train(killed)
    resumed, cb = trainer_for(tmp_path / "run")
    train(resumed, resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-4"))
    assert [r["step"] for r in cb.history] == [r["step"] for r in cb_whole.history] == [0, 2, 4, 6]
    for got, want in zip(cb.history, cb_whole.history):
        assert got["lambda_max"] == pytest.approx(want["lambda_max"], rel=1e-9, abs=1e-12)
        assert got["lambda_max/status"] == "converged"
    assert cb.history[-1]["top_k/persistence"] == pytest.approx(cb_whole.history[-1]["top_k/persistence"], rel=1e-6)
    logged = [e["step"] for e in resumed.state.log_history if "curvature/lambda_max" in e]
    assert logged == [0, 2, 4, 6]  # the resumed Trainer's history holds the measurements before the kill too
