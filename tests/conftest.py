import pyro
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(autouse=True)
def _fresh_pyro():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield


@pytest.fixture
def one_thread():
    """Tiny models: a second intra-op thread only adds synchronization (badly so on a loaded machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
