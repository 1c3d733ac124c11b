import atexit
import os
import shutil
import tempfile

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing in the tests may reach a model hub
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations checks for updates on import otherwise
ONNX_CACHE = os.environ.setdefault("HCSI_ONNX_CACHE_DIR", tempfile.mkdtemp(prefix="hcsi-test-onnx-"))
atexit.register(shutil.rmtree, ONNX_CACHE, True)  # the tests' exports (about 140 MB each) go with the session


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
