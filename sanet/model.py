"""SANet and SANet-Tiny: a faithful, export-friendly definition.

Parameter names follow the reference checkpoint (kaigelee/SANet, see
docs/reference_state_dict.txt) so its weights load with ``strict=True``.
Two deliberate departures from the reference code, both numerically exact:
adaptive average pooling and nearest upsampling in SCE are written as small
constant matrices (pool = P_h @ x @ P_w^T), so the classic ONNX exporter at
opset 17 emits MatMul instead of refusing the graph or emitting Gather chains.
The matrices are non-persistent buffers per feature size (SCEMatrices), built
on the model's device: a forward makes no host-to-device copies.
"""
import copy
from dataclasses import asdict, dataclass, field
from typing import List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .constants import IMAGENET_MEAN, IMAGENET_STD
from .errors import SanetError

CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)
CAMVID_CLASSES = (
    "sky", "building", "pole", "road", "pavement", "tree", "sign", "fence", "car",
    "pedestrian", "bicyclist",
)
VARIANTS = ("sanet", "sanet-tiny")
OUTPUT_STRIDE = 32  # feat32 is 1/32 of the input; SCE grids need at least one cell
SIZE_MULTIPLE = 8  # the PixelShuffle(8) head reproduces the input size exactly for multiples of 8


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network and feed it; travels inside checkpoints."""

    variant: str = "sanet"
    num_classes: int = 19
    class_names: List[str] = field(default_factory=lambda: list(CITYSCAPES_CLASSES))
    mean: Tuple[float, float, float] = IMAGENET_MEAN
    std: Tuple[float, float, float] = IMAGENET_STD
    aux_head: bool = True

    def __post_init__(self):
        if self.variant not in VARIANTS:
            raise SanetError("unknown variant {!r}: choose one of {}".format(self.variant, ", ".join(VARIANTS)))
        if self.num_classes < 1:
            raise SanetError("num_classes must be >= 1, got {}".format(self.num_classes))
        if len(self.class_names) != self.num_classes:
            self.class_names = default_class_names(self.num_classes)
        self.mean = tuple(float(v) for v in self.mean)
        self.std = tuple(float(v) for v in self.std)

    def to_dict(self):
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def default_class_names(num_classes):
    if num_classes == len(CITYSCAPES_CLASSES):
        return list(CITYSCAPES_CLASSES)
    if num_classes == len(CAMVID_CLASSES):
        return list(CAMVID_CLASSES)
    return ["class_{}".format(i) for i in range(num_classes)]


def check_input_size(height, width):
    """Raise a SanetError unless the network maps (height, width) to logits of the same size."""
    if height % SIZE_MULTIPLE or width % SIZE_MULTIPLE or height < OUTPUT_STRIDE or width < OUTPUT_STRIDE:
        raise SanetError(
            "input size {}x{} is not supported: height and width must be multiples of {} and at least {} "
            "(e.g. 512x1024, 720x960)".format(height, width, SIZE_MULTIPLE, OUTPUT_STRIDE)
        )


# ----------------------------------------------------------------------------------------------
# Exact linear-map versions of adaptive average pooling and nearest upsampling.
#
# Sizes are Python ints (eager runs and static exports) or 0-d int64 tensors (exports with dynamic H x W, where the
# same ops become Range/compare/Cast nodes and the sizes stay symbolic). With ints the matrices are built on
# ``device`` by device-side ops (arange, compare, divide, clamp: kernels with scalar arguments, no host data), so a
# forward never copies from the host: such a copy is illegal while a CUDA graph captures, and stalls the stream
# otherwise. In a static ONNX trace the same ops have constant inputs, so the exporter's constant propagation turns
# them into the initializers earlier releases baked in from NumPy (same bytes).


def adaptive_pool_matrix(in_size, out_size, device=None):
    """(out_size, in_size) float32 matrix whose rows average the bins of F.adaptive_avg_pool1d."""
    rows = torch.arange(out_size, device=device)  # (out,)
    start = rows * in_size // out_size
    end = ((rows + 1) * in_size + out_size - 1) // out_size  # ceil, as in PyTorch's adaptive pooling
    cols = torch.arange(in_size, device=device)  # (in,)
    # reshape(-1, 1), not unsqueeze(1): for out_size 1 torch 2.1's exporter folds (rows + 1) * in_size to a 0-d
    # tensor, and an Unsqueeze at axis 1 of a 0-d tensor is invalid ONNX; a Reshape takes 0-d and 1-d alike.
    inside = (cols.reshape(1, -1) >= start.reshape(-1, 1)) & (cols.reshape(1, -1) < end.reshape(-1, 1))
    return inside.float() / (end - start).reshape(-1, 1).float()


def nearest_upsample_matrix(in_size, out_size, device=None):
    """(out_size, in_size) 0/1 float32 matrix reproducing F.interpolate(mode="nearest") along one axis."""
    dynamic = torch.is_tensor(in_size)
    # float32, as PyTorch's nearest interpolation (with int sizes the same float32 quotient, as a Python number)
    scale = in_size.float() / out_size.float() if dynamic else float(np.float32(in_size) / np.float32(out_size))
    src = torch.floor(torch.arange(out_size, device=device).float() * scale).long()  # (out,)
    src = torch.minimum(src, in_size - 1) if dynamic else src.clamp(max=in_size - 1)
    return (torch.arange(in_size, device=device).reshape(1, -1) == src.reshape(-1, 1)).float()  # reshape: see above


def separable_map(x, rows, cols):
    """rows @ x @ cols^T over the last two axes: (B, C, H, W) -> (B, C, rows.shape[0], cols.shape[0]).

    ``rows`` and ``cols`` are already on x's device (SCE's buffers); the cast is a no-op unless autocast or a dynamic
    export gives x another float type. The torch2trt route converts this function as a whole (sanet.torch2trt_route).
    """
    rows, cols = rows.to(dtype=x.dtype), cols.to(dtype=x.dtype)
    return torch.matmul(torch.matmul(rows, x), cols.t())


def shape_of(x):
    """(B, C, H, W) sizes as a 1-D int64 tensor; traced as a Shape op, so sizes stay symbolic in ONNX."""
    return torch._shape_as_tensor(x)


def dynamic_grid_width(grid_height, feat_height, feat_width):
    """sce_grid's width for tensor sizes. float32 rounding equals Python's round here: g*w/h is either an
    exact half (representable) or at least 1/(2h) away from one, far beyond float32 error."""
    ratio = feat_width.float() * grid_height / feat_height.float()
    return torch.clamp(torch.round(ratio), min=1.0).long()


def sce_grid(grid_height, feat_height, feat_width):
    """Pooling grid of one SCE branch: height g, width following the feature map's aspect ratio."""
    return grid_height, max(1, int(round(grid_height * feat_width / feat_height)))


# ----------------------------------------------------------------------------------------------
# Building blocks


class ConvBNReLU(nn.Module):
    def __init__(self, in_ch, out_ch, kernel_size=3):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


def conv_bn_relu_seq(in_ch, out_ch):
    """3x3 conv + BN + ReLU as a Sequential (reference names: .0 conv, .1 bn)."""
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, 3, padding=1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU())


class BasicBlock(nn.Module):
    def __init__(self, in_ch, out_ch, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.downsample = None
        if stride != 1 or in_ch != out_ch:
            self.downsample = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18DeepStem(nn.Module):
    """ResNet-18 (v1c deep stem ending at 128 channels); returns feat8, feat16, feat32."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 128, 3, 1, 1, bias=False),
        )
        self.bn1 = nn.BatchNorm2d(128)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, strides, in_ch = (64, 128, 256, 512), (1, 2, 2, 2), 128
        for index, (width, stride) in enumerate(zip(widths, strides), start=1):
            setattr(self, "layer{}".format(index), nn.Sequential(BasicBlock(in_ch, width, stride), BasicBlock(width, width)))
            in_ch = width

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))  # (B, 128, H/4, W/4)
        feat8 = self.layer2(self.layer1(x))  # (B, 128, H/8, W/8)
        feat16 = self.layer3(feat8)  # (B, 256, H/16, W/16)
        feat32 = self.layer4(feat16)  # (B, 512, H/32, W/32)
        return feat8, feat16, feat32


class SCEMatrices(nn.Module):
    """SCE's 16 pooling/upsampling matrices at one feature size (h, w), as non-persistent buffers: not in the state
    dict (reference checkpoints load with strict=True), moved and cast by .to() and copied by deepcopy with the model.
    Branch i (grid g x g_w) has pool_i_rows (g, h), pool_i_cols (g_w, w), up_i_rows (h, g), up_i_cols (w, g_w)."""

    def __init__(self, height, width, grid_heights, dtype, device):
        super().__init__()
        for index, grid_height in enumerate(grid_heights):
            grid = sce_grid(grid_height, height, width)
            matrices = {"pool_{}_rows": adaptive_pool_matrix(height, grid[0], device),
                        "pool_{}_cols": adaptive_pool_matrix(width, grid[1], device),
                        "up_{}_rows": nearest_upsample_matrix(grid[0], height, device),
                        "up_{}_cols": nearest_upsample_matrix(grid[1], width, device)}
            for name, matrix in matrices.items():
                self.register_buffer(name.format(index), matrix.to(dtype), persistent=False)

    def branch(self, index):
        """((pool rows, pool cols), (upsample rows, upsample cols)) of branch ``index``."""
        return ((getattr(self, "pool_{}_rows".format(index)), getattr(self, "pool_{}_cols".format(index))),
                (getattr(self, "up_{}_rows".format(index)), getattr(self, "up_{}_cols".format(index))))


class SCE(nn.Module):
    """Selective context encoding: four pooled context branches blended by spatial attention."""

    GRID_HEIGHTS = (6, 3, 2, 1)

    def __init__(self, in_ch=512, ch=128):
        super().__init__()
        self.reduce_channel = ConvBNReLU(in_ch, ch, 1)
        self.spp = nn.Module()
        for index in range(len(self.GRID_HEIGHTS)):
            self.spp.add_module("spp_{}".format(index + 1), ConvBNReLU(ch, ch, 1))
        branches = len(self.GRID_HEIGHTS)
        self.spatial_attention = nn.Sequential(ConvBNReLU(ch * branches, ch, 1), nn.Conv2d(ch, branches, 1, bias=False))
        nn.init.zeros_(self.spatial_attention[1].weight)
        # "hxw" -> SCEMatrices, filled on the first forward at each feature size (a few KB each). Built there, on the
        # input's device by device-side ops, rather than up front: the sizes a model will run at are known only from
        # its inputs, and a build on the device needs no host copy even the first time (a CUDA-graph capture may be
        # the first forward at its size).
        self.matrices = nn.ModuleDict()

    dynamic_shapes = False  # True only in exports with dynamic H x W (see DeployGraph)
    dla_friendly = False  # True only in DLA-friendly exports (see enable_dla_friendly)

    def forward(self, x):
        x = self.reduce_channel(x)  # (B, 128, h, w) with h, w = H/32, W/32
        contexts = []
        for index in range(len(self.GRID_HEIGHTS)):
            pool, upsample = self._pool_and_upsample(x, index)  # (g, h), (g_w, w); (h, g), (w, g_w)
            pooled = dla_resample(x, *pool) if self.dla_friendly else separable_map(x, *pool)  # (B, 128, g, g_w)
            branch = getattr(self.spp, "spp_{}".format(index + 1))(pooled)
            contexts.append(dla_resample(branch, *upsample) if self.dla_friendly else separable_map(branch, *upsample))
        attention = torch.sigmoid(self.spatial_attention(torch.cat(contexts, dim=1))) + 1.0  # (B, 4, h, w)
        for index, context in enumerate(contexts):
            x = x + context * attention[:, index:index + 1]
        return x

    def _pool_and_upsample(self, x, index):
        """The row and column matrices of branch ``index``'s adaptive pooling and of its nearest upsampling back."""
        if self.dynamic_shapes:
            shape = shape_of(x)
            height, width = shape[2], shape[3]
            grid_height = self.GRID_HEIGHTS[index]
            grid = torch.tensor(grid_height, dtype=torch.int64)
            grid_width = dynamic_grid_width(grid_height, height, width)
            return ((adaptive_pool_matrix(height, grid), adaptive_pool_matrix(width, grid_width)),
                    (nearest_upsample_matrix(grid, height), nearest_upsample_matrix(grid_width, width)))
        height, width = int(x.shape[-2]), int(x.shape[-1])
        key = "{}x{}".format(height, width)
        if key not in self.matrices:
            self.matrices[key] = SCEMatrices(height, width, self.GRID_HEIGHTS, self.reduce_channel.conv.weight.dtype, x.device)
        return self.matrices[key].branch(index)


def generalized_mean_pool(x, p=3.0, eps=1e-6):
    """GeM pooling to 1x1: (B, C, H, W) -> (B, C), i.e. mean(clamp(x, eps)^p)^(1/p) over H x W.

    Computed as m * mean((clamp(x, eps) / m)^p)^(1/p) with m the per-(B, C) max, an exact identity, so every
    Pow input is in (0, 1] and nothing overflows FP16's 65504 (x^3 does for x > 40.3; random init reaches
    9.4e5 at 512x1024). m is detached: the function does not depend on it, so gradients are unchanged.
    """
    x = x.clamp(min=eps)
    peak = x.amax(dim=(2, 3), keepdim=True).detach()  # (B, C, 1, 1), >= eps
    return ((x / peak).pow(p).mean(dim=(2, 3), keepdim=True).pow(1.0 / p) * peak).flatten(1)


class SFF(nn.Module):
    """Scale-aware feature fusion of an upsampled low-resolution map with a high-resolution one."""

    def __init__(self, low_ch, high_ch, ch=128, kernel_size=5):
        super().__init__()
        self.conv_low = conv_bn_relu_seq(low_ch, ch)
        self.conv_high = conv_bn_relu_seq(high_ch, ch)
        self.conv_1 = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.conv_2 = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.channels = ch

    dynamic_shapes = False  # True only in exports with dynamic H x W: the target size stays symbolic
    dla_friendly = False  # True only in DLA-friendly exports: half-pixel 2x upsampling where the sizes double

    def forward(self, low, high):
        high = self.conv_high(high)  # (B, 128, Hh, Wh)
        size = high.shape[-2:] if self.dynamic_shapes else (int(high.shape[-2]), int(high.shape[-1]))
        low = self.conv_low(low)  # (B, 128, Hl, Wl)
        if self.dla_friendly and not self.dynamic_shapes and tuple(size) == (2 * low.shape[-2], 2 * low.shape[-1]):
            # DLA's bilinear Resize takes half-pixel coordinates and integer scales only: not the same function as
            # align_corners (the pixels move by up to half a low-resolution pixel); its parity is measured
            low = F.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)
        else:
            low = F.interpolate(low, size=size, mode="bilinear", align_corners=True)  # (B, 128, Hh, Wh)
        # Interleave the two descriptors (l0, h0, l1, h1, ...) so the 1-D convs mix both scales.
        # Batch stays -1 in reshapes so the exported graph needs no Shape/Gather arithmetic.
        descriptor = torch.stack([generalized_mean_pool(low), generalized_mean_pool(high)], dim=2)  # (B, C, 2)
        weights = self.conv_2(self.conv_1(descriptor.reshape(-1, 1, 2 * self.channels)))  # (B, 1, 2C)
        weights = torch.sigmoid(weights.reshape(-1, self.channels, 2, 1))  # (B, C, 2, 1)
        return weights[:, :, 0:1] * low + weights[:, :, 1:2] * high


class SegHead(nn.Module):
    """ConvBNReLU then a 1x1 classifier; PixelShuffle (SANet) or bilinear (SANet-Tiny) to full size."""

    def __init__(self, in_ch, mid_ch, num_classes, up_factor, pixel_shuffle):
        super().__init__()
        self.conv = ConvBNReLU(in_ch, mid_ch, 3)
        out_ch = num_classes * up_factor * up_factor if pixel_shuffle else num_classes
        self.conv_out = nn.Conv2d(mid_ch, out_ch, 1, bias=True)
        self.up_factor = up_factor
        self.pixel_shuffle = pixel_shuffle

    def forward(self, x):
        x = self.conv_out(self.conv(x))
        if self.pixel_shuffle:
            return F.pixel_shuffle(x, self.up_factor)  # DepthToSpace in ONNX
        return F.interpolate(x, scale_factor=float(self.up_factor), mode="bilinear", align_corners=False)


AUX_PREFIX = "conv_out16."  # state-dict keys of the training-only auxiliary head (SANet.conv_out16)


class SANet(nn.Module):
    """SANet: (B, 3, H, W) normalised RGB -> (B, classes, H, W) logits; (main, aux) in training mode."""

    def __init__(self, config: Optional[ModelConfig] = None):
        super().__init__()
        self.config = config or ModelConfig()
        classes, shuffle = self.config.num_classes, self.config.variant == "sanet"
        self.resnet = ResNet18DeepStem()
        self.sce = SCE()
        self.sff1 = SFF(128, 256)
        self.sff2 = SFF(128, 128)
        self.conv_out32 = SegHead(128, 128, classes, 8, shuffle)
        self.conv_out16 = SegHead(256, 64, classes, 16, shuffle) if self.config.aux_head else None
        self._init_weights()

    def _init_weights(self):
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.weight is not self.sce.spatial_attention[1].weight:
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x):
        feat8, feat16, feat32 = self.resnet(x)
        fused = self.sff2(self.sff1(self.sce(feat32), feat16), feat8)  # (B, 128, H/8, W/8)
        main = self.conv_out32(fused)  # (B, classes, H, W)
        if self.training and self.conv_out16 is not None:
            return main, self.conv_out16(feat16)
        return main

    @torch.no_grad()
    def predict(self, x):
        """(B, 3, H, W) -> (B, H, W) int64 class map."""
        return self.forward(x).argmax(dim=1)


def enable_dla_friendly(model):
    """Export-time variant of SCE and SFF built from what TensorRT 8.5 runs on DLA (docs/simulator.md): exact
    AveragePool chains and integer nearest Resizes in place of SCE's matrix products where the bins are uniform,
    and half-pixel 2x bilinear upsampling in SFF where the sizes double (close to align_corners, not equal)."""
    for module in model.modules():
        if isinstance(module, (SCE, SFF)):
            module.dla_friendly = True
    return model


def dla_resample(x, rows, cols):
    """separable_map(x, rows, cols) by ops DLA runs where that is exact: an (out, in) pooling matrix with uniform
    bins is an average over in/out inputs (AveragePool, windows split into factors <= 8 for DLA), a nearest
    upsampling matrix with an integer ratio a Resize with that scale; anything else stays a matrix product.
    The matrices are constants here (a static export), so the choice is made once, at trace time."""
    pool, repeat = [], []
    for matrix in (rows, cols):
        out_size, in_size = matrix.shape
        if out_size <= in_size and in_size % out_size == 0 and torch.equal(
                matrix, torch.kron(torch.eye(out_size), torch.full((1, in_size // out_size), out_size / in_size)).to(matrix)):
            pool.append(in_size // out_size)
            repeat.append(1)
        elif out_size % in_size == 0 and torch.equal(
                matrix, torch.kron(torch.eye(in_size), torch.ones(out_size // in_size, 1)).to(matrix)):
            pool.append(1)
            repeat.append(out_size // in_size)
        else:
            return separable_map(x, rows, cols)
    if max(pool) > 1:
        rows_factors, cols_factors = small_factors(pool[0]), small_factors(pool[1])
        steps = max(len(rows_factors), len(cols_factors))
        for window in zip(rows_factors + [1] * (steps - len(rows_factors)), cols_factors + [1] * (steps - len(cols_factors))):
            x = F.avg_pool2d(x, window, window)  # means of equal-sized means: exact
    if max(repeat) > 1:
        x = F.interpolate(x, scale_factor=(float(repeat[0]), float(repeat[1])), mode="nearest")
    return x


def small_factors(size, largest=8):
    """``size`` as a product of factors <= ``largest`` where it can be (a larger prime stays one factor): DLA pools
    windows of at most 8 (NvInfer.h, release/8.5). small_factors(32) == [8, 4]."""
    factors, rest = [], size
    for factor in range(largest, 1, -1):
        while rest % factor == 0 and rest > 1:
            factors.append(factor)
            rest //= factor
    if rest > 1:
        factors.append(rest)
    return factors


def enable_dynamic_shapes(model):
    """Make SCE and SFF compute their resampling from tensor shapes, for exports with dynamic H x W."""
    for module in model.modules():
        if isinstance(module, (SCE, SFF)):
            module.dynamic_shapes = True
    return model


def build_model(variant="sanet", num_classes=19, **kwargs):
    return SANet(ModelConfig(variant=variant, num_classes=num_classes, **kwargs))


def count_parameters(model, include_aux=False):
    return sum(
        p.numel() for name, p in model.named_parameters() if include_aux or not name.startswith(AUX_PREFIX)
    )


def count_gflops(model, height, width):
    """GFLOPs (2 per multiply-accumulate) of one inference forward at batch 1, via FlopCounterMode on a copy of the
    model on the meta device: FLOPs depend on shapes only, so nothing is computed (0.2 s instead of 8 s at 1024x2048)."""
    import copy

    from torch.utils.flop_counter import FlopCounterMode

    shapes_only = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        shapes_only(torch.zeros(1, 3, height, width, device="meta"))
    return counter.get_total_flops() / 1e9


# ----------------------------------------------------------------------------------------------
# BatchNorm folding


def _fold_into(conv, bn):
    """Fold an eval-mode BatchNorm into the preceding convolution's weight and bias."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    conv.weight.data = conv.weight.data * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    bias = conv.bias.data if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)


def _last_conv(module):
    if isinstance(module, nn.Conv2d):
        return module
    if isinstance(module, nn.Sequential) and len(module) and isinstance(module[-1], nn.Conv2d):
        return module[-1]
    return None


def fold_batchnorm(model):
    """Return an eval-mode copy of ``model`` with every conv+BN pair fused; outputs are unchanged."""
    folded = copy.deepcopy(model).eval()
    with torch.no_grad():
        for parent in list(folded.modules()):
            children = list(parent.named_children())
            # Consecutive (conv, bn) children cover Sequentials and attribute pairs like conv1/bn1 or conv/bn,
            # because module registration order follows the data flow in every block above.
            for (_, first), (bn_name, second) in zip(children, children[1:]):
                conv = _last_conv(first)
                if conv is not None and isinstance(second, nn.BatchNorm2d):
                    _fold_into(conv, second)
                    setattr(parent, bn_name, nn.Identity())
    return folded
