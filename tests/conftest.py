import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny ops on a shared 2-core box are ~100x slower with 2 OpenMP threads than with 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
