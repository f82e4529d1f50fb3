import pytest
import torch

from bssl.errors import UserError
from bssl.models import MODELS, build_backbone, build_model, load_student, save_student
from bssl.nn import BinaryConv2d, BinaryConvBN, get_stage, set_stage

STUDENTS = ["reactnet-a", "reactnet-b", "reactnet-c", "birealnet-18", "reactnet-18"]


def test_registry_names():
    assert set(STUDENTS) <= set(MODELS.names())


@pytest.mark.parametrize("name, size", [(n, s) for n in STUDENTS for s in (32, 64)])
def test_forward_backward_shapes_and_one_step(name, size):
    torch.manual_seed(0)
    m = build_model(name, num_classes=5, input_size=size, width=0.125)
    assert m.spec["stem"] == "small"
    x = torch.randn(2, 3, size, size)
    f = m.features(x)
    assert f.shape == (2, m.feature_dim)
    out = m(x)
    assert out.shape == (2, 5)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    before = {k: v.detach().clone() for k, v in m.named_parameters()}
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    convs = [mod for mod in m.modules() if isinstance(mod, BinaryConv2d)]
    assert convs and all(c.weight.grad is not None and c.weight.grad.abs().sum() > 0 for c in convs)
    opt.step()
    changed = [k for k, v in m.named_parameters() if not torch.equal(v, before[k])]
    assert any("conv.weight" in k for k in changed) and any(k.startswith("classifier") for k in changed)


@pytest.mark.parametrize("name", STUDENTS)
def test_full_size_forward_backward_shape(name):
    m = build_model(name, num_classes=3, input_size=224, width=0.125)
    assert m.spec["stem"] == "imagenet"
    x = torch.randn(1, 3, 224, 224, requires_grad=True)
    out = m(x)
    assert out.shape == (1, 3)
    out.sum().backward()
    assert x.grad.shape == x.shape and m.stem[0].weight.grad is not None


def test_reactnet_a_topology_at_224():
    m = build_model("reactnet-a")
    assert len(m.blocks) == 13
    assert m.feature_dim == 1024
    chans = [(b.in_channels, b.out_channels, b.stride) for b in m.blocks]
    assert chans == [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    assert sum(p.numel() for p in m.parameters()) == 29_344_584
    assert sum(c.weight.numel() for c in m.modules() if isinstance(c, BinaryConv2d)) == 28_253_184
    # every BinaryConv2d sits inside a BinaryConvBN unit
    units = [u for u in m.modules() if isinstance(u, BinaryConvBN)]
    assert len(units) == sum(1 for c in m.modules() if isinstance(c, BinaryConv2d)) == 13 + 13 + 5


def test_variants_replace_doubling_1x1_with_fp():
    b, c = build_model("reactnet-b"), build_model("reactnet-c")
    fp_b = [mod for mod in b.modules() if type(mod) is torch.nn.Conv2d]
    fp_c = [mod for mod in c.modules() if type(mod) is torch.nn.Conv2d]
    assert len(fp_b) == len(fp_c) == 6  # stem + five channel-doubling blocks
    assert all(mod.groups == 4 for mod in fp_b[1:]) and all(mod.groups == 1 for mod in fp_c[1:])


def test_stage_switch_is_lossless_on_a_model():
    torch.manual_seed(1)
    m1 = build_model("reactnet-a", num_classes=4, input_size=32, width=0.25, stage=1)
    assert get_stage(m1) == 1
    x = torch.randn(2, 3, 32, 32)
    m1(x).sum().backward()
    torch.optim.SGD(m1.parameters(), lr=0.5).step()  # "train" so weights differ from init
    sd1 = {k: v.clone() for k, v in m1.state_dict().items()}
    set_stage(m1, 2)
    sd2 = m1.state_dict()
    assert list(sd1) == list(sd2) and all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    fresh2 = build_model("reactnet-a", num_classes=4, input_size=32, width=0.25, stage=2)
    assert list(fresh2.state_dict()) == list(sd1)
    fresh2.load_state_dict(sd1, strict=True)
    m1.eval(), fresh2.eval()
    with torch.no_grad():
        assert torch.equal(m1(x), fresh2(x))


def test_save_and_load_student(tmp_path):
    torch.manual_seed(2)
    m = build_model("birealnet-18", num_classes=7, input_size=32, width=0.125, stage=1).eval()
    path = tmp_path / "s.pt"
    save_student(path, m, {"distill": {"lr": 1.0}}, epoch=3)
    m2 = load_student(path).eval()
    assert get_stage(m2) == 1 and m2.spec == m.spec
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(m(x), m2(x))


def test_load_student_rejects_other_kinds(tmp_path):
    from bssl.utils import save_checkpoint
    p = tmp_path / "t.pt"
    save_checkpoint(p, "teacher", {"backbone": {}}, {})
    with pytest.raises(UserError, match="student"):
        load_student(p)


@pytest.mark.parametrize("kwargs, match", [
    ({"name": "reactnet-z"}, "unknown model"),
    ({"name": "reactnet-a", "input_size": 40, "stem": "small"}, "multiple of 16"),
    ({"name": "reactnet-a", "input_size": 32, "stem": "imagenet"}, "at least 64"),
    ({"name": "birealnet-18", "input_size": 100}, "multiple of"),
    ({"name": "reactnet-a", "width": 0}, "width"),
    ({"name": "reactnet-a", "num_classes": 0}, "num_classes"),
    ({"name": "reactnet-a", "stem": "tiny"}, "stem"),
    ({"name": "reactnet-a", "stage": 3}, "stage"),
    ({"name": "reactnet-a", "pad_value": "one"}, "pad_value"),
])
def test_bad_input_is_a_user_error(kwargs, match):
    kwargs = dict(kwargs)
    with pytest.raises(UserError, match=match):
        build_model(kwargs.pop("name"), **kwargs)


def test_block_rejects_unsupported_channels():
    from bssl.models import ReActBlock
    with pytest.raises(UserError, match="c -> c or c -> 2c"):
        ReActBlock(16, 48)


@pytest.mark.parametrize("size, stem", [(32, "small"), (64, "small"), (112, "small"), (96, "imagenet"), (224, "imagenet")])
def test_auto_stem(size, stem):
    with torch.device("meta"):
        assert build_model("reactnet-a", input_size=size, stem="auto").spec["stem"] == stem


def test_width_rounding():
    m = build_model("reactnet-a", input_size=32, width=0.3, num_classes=2)
    assert m.stem[0].out_channels == 8 and m.feature_dim == 8 * 32
    m = build_model("reactnet-a", input_size=32, width=0.5, num_classes=2)
    assert m.stem[0].out_channels == 16 and m.feature_dim == 512


@pytest.mark.parametrize("name, dim", [("resnet18", 512), ("resnet50", 2048)])
def test_backbones(name, dim):
    net = build_backbone(name, small_stem=True).eval()
    assert net.feature_dim == dim and net.maxpool.__class__.__name__ == "Identity"
    with torch.no_grad():
        assert net(torch.randn(1, 3, 32, 32)).shape == (1, dim)
    with pytest.raises(UserError):
        build_backbone("vgg")


# ---- official ReActNet checkpoints: an independent functional re-statement of the official
# mobilenet/2_step2/reactnet.py forward (torch.sign, zero padding, alpha * sign(W) weights) run on a
# random state dict with the official key names, compared with the imported bssl model.

def _official_a_state(base, num_classes, step1=False):
    g = torch.Generator().manual_seed(0)
    chans = [base, 2 * base] + [4 * base] * 2 + [8 * base] * 2 + [16 * base] * 6 + [32 * base] * 2
    sd = {"module.feature.0.conv1.weight": torch.randn(base, 3, 3, 3, generator=g)}

    def bn(prefix, c):
        sd[f"{prefix}.weight"] = torch.rand(c, generator=g) + 0.5
        sd[f"{prefix}.bias"] = torch.randn(c, generator=g) * 0.1
        sd[f"{prefix}.running_mean"] = torch.randn(c, generator=g) * 0.1
        sd[f"{prefix}.running_var"] = torch.rand(c, generator=g) + 0.5
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)

    def bias(prefix, c):
        sd[f"{prefix}.bias"] = torch.randn(1, c, 1, 1, generator=g) * 0.1

    def conv(prefix, o, i, k):
        w = torch.randn(o, i, k, k, generator=g) * 0.01
        if step1:
            sd[f"{prefix}.weight"] = w
        else:
            sd[f"{prefix}.weights"] = w.reshape(-1, 1)

    bn("module.feature.0.bn1", base)
    for i in range(1, len(chans)):
        f, cin, cout = f"module.feature.{i}", chans[i - 1], chans[i]
        bias(f"{f}.move11", cin); conv(f"{f}.binary_3x3", cin, cin, 3); bn(f"{f}.bn1", cin)
        bias(f"{f}.move12", cin); sd[f"{f}.prelu1.weight"] = torch.rand(cin, generator=g) * 0.5
        bias(f"{f}.move13", cin); bias(f"{f}.move21", cin)
        if cin == cout:
            conv(f"{f}.binary_pw", cin, cin, 1); bn(f"{f}.bn2", cin)
        else:
            conv(f"{f}.binary_pw_down1", cin, cin, 1); conv(f"{f}.binary_pw_down2", cin, cin, 1)
            bn(f"{f}.bn2_1", cin); bn(f"{f}.bn2_2", cin)
        bias(f"{f}.move22", cout); sd[f"{f}.prelu2.weight"] = torch.rand(cout, generator=g) * 0.5
        bias(f"{f}.move23", cout)
    sd["module.fc.weight"] = torch.randn(num_classes, 32 * base, generator=g) * 0.1
    sd["module.fc.bias"] = torch.randn(num_classes, generator=g) * 0.1
    return {"state_dict": sd, "epoch": 3}, chans


def _official_a_forward(sd, chans, x, step1=False):
    import torch.nn.functional as F
    sd = {k[len("module."):]: v for k, v in sd.items()}

    def bn(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"],
                            False, 0.1, 1e-5)

    def bconv(t, p, shape, stride, pad):
        w = sd[f"{p}.weight"] if step1 else sd[f"{p}.weights"].view(shape)
        if not step1:
            w = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.sign(w)
        return F.conv2d(torch.sign(t), w, stride=stride, padding=pad)

    def rp(t, a, p, b):
        return F.prelu(t + sd[f"{a}.bias"], sd[f"{p}.weight"]) + sd[f"{b}.bias"]

    x = bn(F.conv2d(x, sd["feature.0.conv1.weight"], stride=2, padding=1), "feature.0.bn1")
    for i in range(1, len(chans)):
        f, cin, cout = f"feature.{i}", chans[i - 1], chans[i]
        stride = 2 if cin != cout and cout != 2 * chans[0] else 1
        out1 = bn(bconv(x + sd[f"{f}.move11.bias"], f"{f}.binary_3x3", (cin, cin, 3, 3), stride, 1), f"{f}.bn1")
        out1 = rp(out1 + (F.avg_pool2d(x, 2) if stride == 2 else x), f"{f}.move12", f"{f}.prelu1", f"{f}.move13")
        s = out1 + sd[f"{f}.move21.bias"]
        if cin == cout:
            out2 = bn(bconv(s, f"{f}.binary_pw", (cin, cin, 1, 1), 1, 0), f"{f}.bn2") + out1
        else:
            o1 = bn(bconv(s, f"{f}.binary_pw_down1", (cin, cin, 1, 1), 1, 0), f"{f}.bn2_1") + out1
            o2 = bn(bconv(s, f"{f}.binary_pw_down2", (cin, cin, 1, 1), 1, 0), f"{f}.bn2_2") + out1
            out2 = torch.cat([o1, o2], 1)
        x = rp(out2, f"{f}.move22", f"{f}.prelu2", f"{f}.move23")
    return F.linear(x.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])


@pytest.mark.parametrize("step1", [False, True])
def test_official_reactnet_a_checkpoint_matches_official_forward(tmp_path, step1):
    from bssl.models import load_official_reactnet
    ckpt, chans = _official_a_state(8, 6, step1=step1)
    path = tmp_path / "checkpoint.pth.tar"
    torch.save(ckpt, path)
    m = load_official_reactnet(path)
    assert m.spec["name"] == "reactnet-a" and m.spec["pad_value"] == 0.0
    assert get_stage(m) == (1 if step1 else 2) and m.feature_dim == 256
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours = m.eval()(x)
        ref = _official_a_forward(ckpt["state_dict"], chans, x, step1=step1)
    assert torch.allclose(ours, ref, rtol=1e-4, atol=1e-4), (ours - ref).abs().max()


def test_official_import_rejects_other_files(tmp_path):
    from bssl.models import load_official_reactnet
    p = tmp_path / "x.pth.tar"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(1)}}, p)
    with pytest.raises(UserError, match="not an official ReActNet"):
        load_official_reactnet(p)
    with pytest.raises(UserError, match="does not exist"):
        load_official_reactnet(tmp_path / "missing.pth.tar")


def test_official_bireal_based_reactnet_checkpoint_matches_official_forward(tmp_path):
    import torch.nn.functional as F
    from bssl.models import load_official_reactnet
    g = torch.Generator().manual_seed(0)
    base, sd = 8, {}

    def bn(p, c):
        sd[f"{p}.weight"], sd[f"{p}.bias"] = torch.rand(c, generator=g) + 0.5, torch.randn(c, generator=g) * 0.1
        sd[f"{p}.running_mean"], sd[f"{p}.running_var"] = torch.randn(c, generator=g) * 0.1, torch.rand(c, generator=g) + 0.5

    sd["conv1.weight"] = torch.randn(base, 3, 7, 7, generator=g) * 0.1
    bn("bn1", base)
    cin = base
    for layer in range(4):
        cout = base * 2 ** layer
        for j in range(4):
            f = f"layer{layer + 1}.{j}"
            sd[f"{f}.move0.bias"] = torch.randn(1, cin, 1, 1, generator=g) * 0.1
            sd[f"{f}.binary_conv.weights"] = torch.randn(cout * cin * 9, 1, generator=g) * 0.01
            bn(f"{f}.bn1", cout)
            for b in ("move1", "move2"):
                sd[f"{f}.{b}.bias"] = torch.randn(1, cout, 1, 1, generator=g) * 0.1
            sd[f"{f}.prelu.weight"] = torch.rand(cout, generator=g) * 0.5
            if cin != cout:
                sd[f"{f}.downsample.1.weight"] = torch.randn(cout, cin, 1, 1, generator=g) * 0.1
                bn(f"{f}.downsample.2", cout)
            cin = cout
    sd["fc.weight"], sd["fc.bias"] = torch.randn(5, cin, generator=g), torch.randn(5, generator=g)
    path = tmp_path / "r18.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, path)
    m = load_official_reactnet(path).eval()
    assert m.spec["name"] == "reactnet-18" and get_stage(m) == 2

    def bnf(t, p):
        return F.batch_norm(t, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"])

    x = torch.randn(1, 3, 64, 64, generator=g)
    with torch.no_grad():
        h = F.max_pool2d(bnf(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"), 3, 2, 1)
        cin = base
        for layer in range(4):
            cout = base * 2 ** layer
            for j in range(4):
                f, stride = f"layer{layer + 1}.{j}", 2 if layer > 0 and j == 0 else 1
                w = sd[f"{f}.binary_conv.weights"].view(cout, cin, 3, 3)
                w = w.abs().mean(dim=(1, 2, 3), keepdim=True) * torch.sign(w)
                out = bnf(F.conv2d(torch.sign(h + sd[f"{f}.move0.bias"]), w, stride=stride, padding=1), f"{f}.bn1")
                res = h if cin == cout else bnf(F.conv2d(F.avg_pool2d(h, 2), sd[f"{f}.downsample.1.weight"]), f"{f}.downsample.2")
                h = F.prelu(out + res + sd[f"{f}.move1.bias"], sd[f"{f}.prelu.weight"]) + sd[f"{f}.move2.bias"]
                cin = cout
        ref = F.linear(h.mean(dim=(2, 3)), sd["fc.weight"], sd["fc.bias"])
        assert torch.allclose(m(x), ref, rtol=1e-4, atol=1e-4), (m(x) - ref).abs().max()
