import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def free_port() -> int:
    """A TCP port on localhost nobody listens on (process-group rendezvous, RPC servers)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_teacher(path, cfg):
    """A real bssl teacher checkpoint: the configured method, randomly initialised under seed 0."""
    from bssl.teachers import build_method
    from bssl.teachers.train import teacher_weights
    from bssl.utils import save_checkpoint

    torch.manual_seed(0)
    method, info = build_method(cfg)
    save_checkpoint(path, "teacher", {**teacher_weights(method, info), "epoch": 1}, cfg)
    return path
