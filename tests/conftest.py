import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny tensors: one thread avoids OpenMP spin-waits on the shared 2-core machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def kernels_built() -> bool:
    try:
        from bssl import kernels

        return kernels.available()
    except ImportError:
        return False


needs_kernels = pytest.mark.skipif(not kernels_built(), reason="compiled bssl kernels not available")


def trained_looking(model):
    """BN statistics and affines, RSign/RPReLU biases and PReLU slopes as after training, in eval mode.

    Freshly built, BN is the identity and every bias zero: folding and packing them would pass by
    accident. Draws from torch's global generator, so seeding torch before building the model fixes
    both; the stem's float conv keeps its own initialisation."""
    from torch import nn

    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.uniform_(-1, 1)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.5, 0.5)
            if isinstance(mod, nn.PReLU):
                mod.weight.uniform_(0.05, 0.5)
        bn = {id(p) for mod in model.modules() if isinstance(mod, nn.BatchNorm2d) for p in mod.parameters()}
        for name, p in model.named_parameters():
            if name.endswith(("bias", "bias_in", "bias_out")) and p.dim() == 1 and id(p) not in bn \
                    and "stem" not in name:
                p.uniform_(-0.2, 0.2)
    return model.eval()


def write_teacher(path, cfg):
    """A real bssl teacher checkpoint: the configured method, randomly initialised under seed 0."""
    from bssl.teachers import build_method
    from bssl.teachers.train import teacher_weights
    from bssl.utils import save_checkpoint

    torch.manual_seed(0)
    method, info = build_method(cfg)
    save_checkpoint(path, "teacher", {**teacher_weights(method, info), "epoch": 1}, cfg)
    return path


# A sign input |x + b| at most this share of its layer's RMS from zero is "ambiguous": two correct
# float32 implementations (other summation order, fused multiply-adds) may round it to opposite signs.
AMBIGUOUS = 1e-6


def ambiguous_sign_inputs(model, x):
    """Per input: how many sign inputs of the PyTorch student are within AMBIGUOUS x RMS of zero."""
    from bssl.nn.sign import RSign

    counts = torch.zeros(len(x), dtype=torch.long)

    def hook(mod, inp):
        v = inp[0] + mod.bias.view(1, -1, 1, 1)
        counts.add_((v.abs() <= AMBIGUOUS * v.pow(2).mean().sqrt()).flatten(1).sum(1))

    hooks = [m.register_forward_pre_hook(hook) for m in model.modules() if isinstance(m, RSign)]
    try:
        with torch.no_grad():
            model.features(x)
    finally:
        for h in hooks:
            h.remove()
    return counts.numpy()
