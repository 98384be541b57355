"""Shared test settings: quiet progress bars, offline hub, a private cache, 2 threads."""

import os
import tempfile

import pytest
import torch

os.environ.setdefault("TUNELAB_QUIET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# a private cache per test session: tests never touch the user's ~/.cache/tunelab
os.environ.setdefault("TUNELAB_CACHE", tempfile.mkdtemp(prefix="tunelab-test-cache-"))
# where transformers copies a model's own code when a test lets it run (never ~/.cache/huggingface)
os.environ.setdefault("HF_MODULES_CACHE", tempfile.mkdtemp(prefix="tunelab-test-hf-modules-"))
torch.set_num_threads(2)


@pytest.fixture
def tiny_csv(tmp_path):
    """A small labelled CSV a user might bring: text + string labels."""
    rows = ["text,label"]
    for i in range(40):
        rows.append(f"great wonderful movie number {i},pos" if i % 2 else f"awful boring film number {i},neg")
    path = tmp_path / "reviews.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def one_thread():
    """torch on one thread for this test (tiny ops on 2 busy cores wait at thread barriers), then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def smollm2_tokenizer():
    """SmolLM2-135M-Instruct's tokenizer (converts the packaged GGUF once per test session)."""
    from tunelab.assets.models import load_tokenizer, resolve_model

    return load_tokenizer(resolve_model("smollm2-135m"))
