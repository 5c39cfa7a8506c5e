"""Model definition: shapes, reference names, exact pooling/upsampling, SCE's matrices as buffers (no host-to-device
copies in forward), BN folding, ONNX export."""
import collections
import contextlib
import copy

import pytest
import torch
import torch.nn.functional as F

from sanet.model import (
    VARIANTS,
    adaptive_pool_matrix,
    build_model,
    count_gflops,
    count_parameters,
    dynamic_grid_width,
    fold_batchnorm,
    generalized_mean_pool,
    nearest_upsample_matrix,
    sce_grid,
    separable_map,
)


def reference_entries(shared_docs):
    entries = []
    for line in (shared_docs / "reference_state_dict.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, shape = line.split(" ", 1)
            entries.append((name, tuple(int(v) for v in shape.strip("() ").split(",") if v.strip())))
    return entries


def relative_error(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp(min=1e-12))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(64, 128), (96, 96), (128, 64), (160, 224)])
def test_forward_shapes(variant, size):
    model = build_model(variant, 11)
    images = torch.randn(2, 3, *size)
    model.train()
    main, aux = model(images)
    assert main.shape == (2, 11, *size) and aux.shape == (2, 11, *size)
    model.eval()
    with torch.no_grad():
        assert model(images).shape == (2, 11, *size)
    assert model.predict(images).shape == (2, *size)


def test_state_dict_matches_reference_names_and_shapes(shared_docs):
    expected = reference_entries(shared_docs)
    state = build_model("sanet", 19).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == expected


def test_published_size_and_flops():
    model = build_model("sanet", 19, aux_head=False)
    assert count_parameters(model) / 1e6 == pytest.approx(12.57, rel=0.01)
    for (height, width), published in (((512, 1024), 77.3), ((768, 1536), 174.0), ((1024, 2048), 309.2)):
        assert count_gflops(model, height, width) == pytest.approx(published, rel=0.01)


@pytest.mark.parametrize("in_hw,out_hw", [((16, 32), (6, 12)), ((16, 32), (3, 6)), ((23, 30), (6, 8)),
                                          ((24, 30), (2, 4)), ((7, 5), (1, 1)), ((22, 30), (6, 8))])
def test_pooling_and_upsampling_match_torch(in_hw, out_hw):
    x = torch.randn(2, 5, *in_hw)
    pooled = separable_map(x, adaptive_pool_matrix(in_hw[0], out_hw[0]), adaptive_pool_matrix(in_hw[1], out_hw[1]))
    assert relative_error(pooled, F.adaptive_avg_pool2d(x, out_hw)) <= 1e-5
    up = separable_map(pooled, nearest_upsample_matrix(out_hw[0], in_hw[0]), nearest_upsample_matrix(out_hw[1], in_hw[1]))
    assert torch.equal(up, F.interpolate(pooled, size=in_hw, mode="nearest"))
    for size_in, size_out in zip(in_hw, out_hw):  # 0-d tensor sizes, as in dynamic-shape exports
        sizes = torch.tensor(size_in), torch.tensor(size_out)
        assert torch.equal(adaptive_pool_matrix(*sizes), adaptive_pool_matrix(size_in, size_out))
        assert torch.equal(nearest_upsample_matrix(*sizes[::-1]), nearest_upsample_matrix(size_out, size_in))


def test_dynamic_grid_width_rounds_like_the_static_grid():
    for height in range(1, 70):
        for width in range(1, 140):
            for grid in (6, 3, 2, 1):
                got = int(dynamic_grid_width(grid, torch.tensor(height), torch.tensor(width)))
                assert got == sce_grid(grid, height, width)[1], (grid, height, width)


def test_sce_matrices_are_buffers_outside_the_state_dict(shared_docs):
    model = build_model("sanet", 19).eval()
    with torch.no_grad():
        model(torch.zeros(1, 3, 64, 128))  # feature size 2x4
    matrices = model.sce.matrices["2x4"]
    assert len(list(matrices.buffers())) == 16
    assert matrices.branch(0)[0][0].shape == (6, 2) and matrices.branch(0)[1][1].shape == (4, 12)  # grid 6x12 on 2x4
    expected = reference_entries(shared_docs)
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == expected  # nothing new in checkpoints
    build_model("sanet", 19).load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(build_model("sanet", 19).state_dict(), strict=True)  # and a model holding them loads strictly
    moved = copy.deepcopy(model).to("meta", torch.float64)
    assert all(b.device.type == "meta" and b.dtype == torch.float64 for b in moved.sce.matrices["2x4"].buffers())


class HostCopies:
    """Records every host-to-device transfer made inside the block, for a model on the meta device (the CPU stands
    for the host, meta for the GPU). Two modes, because no one of them sees both kinds:
    * a TorchDispatchMode sees every aten op, nested ones included: an op with tensors on the host and on the device
      (``.to(device)``, ``copy_``, a host tensor fed to a device op) is a transfer;
    * a TorchFunctionMode sees ``torch.tensor(data, device=...)`` and its kin, which copy Python or NumPy data to
      the device inside the call (the dispatch mode sees no op of theirs)."""

    FROM_HOST_DATA = {"tensor", "as_tensor", "asarray"}

    def __init__(self):
        self.calls = []

    @contextlib.contextmanager
    def recording(self):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        calls = self.calls

        def devices(*values):
            return {t.device.type for t in tree_flatten(values)[0] if isinstance(t, torch.Tensor)}

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if {"cpu", "meta"} <= devices(args, kwargs):
                    calls.append(str(func))
                out = func(*args, **(kwargs or {}))
                if {"cpu", "meta"} <= devices(args, kwargs, out):
                    calls.append(str(func))
                return out

        class Functions(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if getattr(func, "__name__", "") in HostCopies.FROM_HOST_DATA and "meta" in devices(out):
                    calls.append("torch." + func.__name__)
                return out

        with Functions(), Ops():
            yield calls


def test_copy_recorder_catches_the_old_separable_map():
    x = torch.zeros(1, 4, 2, 4, device="meta")
    rows, cols = adaptive_pool_matrix(2, 6), adaptive_pool_matrix(4, 12)  # host matrices, as the old lru_cache kept
    recorder = HostCopies()
    with recorder.recording():
        # the lines every forward ran before SCE's matrices became buffers
        rows, cols = rows.to(dtype=x.dtype, device=x.device), cols.to(dtype=x.dtype, device=x.device)
        torch.matmul(torch.matmul(rows, x), cols.t())
        torch.tensor([1.0, 2.0], device="meta")
    assert recorder.calls == ["aten._to_copy.default", "aten._to_copy.default", "torch.tensor"]


@pytest.mark.parametrize("variant", VARIANTS)
def test_forward_makes_no_host_to_device_copies(variant):
    """CUDA-graph capture refuses synchronous host-to-device copies; on the meta device any such copy is recorded."""
    model = build_model(variant, 11).to("meta")
    images = torch.zeros(2, 3, 64, 128, device="meta")
    recorder = HostCopies()
    with recorder.recording():
        model.train()(images)  # the first forward at this size builds SCE's matrices, on the device
        with torch.no_grad():
            model.eval()(images)
            model(torch.zeros(1, 3, 96, 160, device="meta"))  # another size: another set
    assert recorder.calls == []
    assert sorted(model.sce.matrices) == ["2x4", "3x5"]
    assert {b.device.type for b in model.sce.matrices.buffers()} == {"meta"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_batchnorm_folding_keeps_outputs(variant):
    torch.manual_seed(0)
    model = build_model(variant, 19)
    for module in model.modules():  # non-trivial statistics so folding really changes the weights
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    model.eval()
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.randn(1, 3, 128, 256)
    with torch.no_grad():
        assert relative_error(folded(x), model(x)) <= 1e-5


FORBIDDEN_OPS = {"Gather", "GatherND", "Where", "Loop", "If"}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("size", [(512, 1024), (768, 1536), (1024, 2048), (720, 960)])
def test_onnx_export_is_clean_and_matches(variant, size, tmp_path, ort):
    from sanet.export import ExportConfig, export_onnx

    torch.manual_seed(0)
    model = build_model(variant, 19, aux_head=False).eval()
    path = tmp_path / "model.onnx"
    export_onnx(model, path, ExportConfig(height=size[0], width=size[1]), verify=False)
    import onnx

    graph = onnx.load(str(path)).graph
    ops = collections.Counter(node.op_type for node in graph.node)
    assert not FORBIDDEN_OPS & set(ops), ops
    assert ops["MatMul"] >= 16  # SCE pooling/upsampling became matrix products
    if size == (512, 1024):  # numerical check at one size keeps the suite fast on 2 cores
        x = torch.randn(1, 3, *size)
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
        with torch.no_grad():
            assert relative_error(got, model(x)) <= 1e-4


def reference_gem(x, p=3.0, eps=1e-6):
    """GeM as the reference code (kaigelee/SANet) writes it."""
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


@pytest.mark.parametrize("scale", [1e-4, 1.0, 30.0, 1e3])
def test_rescaled_gem_is_the_reference_function(scale):
    torch.manual_seed(0)
    x = torch.randn(2, 16, 12, 24) * scale
    x[0, 0] = -1.0  # a channel with nothing above eps: both give eps
    assert relative_error(generalized_mean_pool(x), reference_gem(x)) <= 1e-6
    wide = x.double()
    assert relative_error(generalized_mean_pool(wide), reference_gem(wide)) <= 1e-12  # an identity, not an approximation
    grads = []
    for gem in (generalized_mean_pool, reference_gem):  # training sees the same gradients too
        leaf = wide.clone().requires_grad_()
        gem(leaf).sum().backward()
        grads.append(leaf.grad)
    assert relative_error(*grads) <= 1e-10


def test_rescaled_gem_survives_half_precision_where_the_reference_overflows():
    x = torch.rand(1, 8, 16, 32) * 100.0  # x^3 up to 1e6 > 65504
    exact = reference_gem(x.double())
    half = generalized_mean_pool(x.half()).double()
    assert torch.isinf(reference_gem(x.half())).any()
    assert torch.isfinite(half).all() and relative_error(half, exact) <= 2e-3  # FP16 rounding only
