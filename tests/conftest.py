import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import otherwise


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def small_model():
    from hcsi.models import build_model

    return build_model("hcsi_net_small")


@pytest.fixture(scope="session")
def full_model():
    from hcsi.models import build_model

    return build_model("hcsi_net")
