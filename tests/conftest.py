import os

import pytest
import torch

# Under pytest-xdist two workers share two cores: one intra-op thread each avoids
# oversubscription (which makes small matvecs 10x slower). Denormals slow late-training
# HVPs severalfold.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)
torch.set_flush_denormal(True)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
