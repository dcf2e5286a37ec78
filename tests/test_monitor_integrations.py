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
