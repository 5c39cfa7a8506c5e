"""Device buffers for TensorRT I/O (torch CUDA tensors, pycuda allocations, or host arrays for the test simulator)
and TensorRT's data types as numpy's. One backend per process, picked by SANET_DEVICE_MEMORY; every backend
allocates, copies and synchronizes on its own stream, the one TensorRT runs on."""
import os

import numpy as np

from .errors import SanetError, require

# TensorRT DataType member name -> numpy dtype. Our own table: TensorRT 8.5's ``trt.nptype`` maps BOOL to
# ``np.bool``, removed in numpy 1.24 (which JetPack 5 images pin), so every call of it raises there.
NUMPY_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "UINT8": np.uint8, "INT32": np.int32,
                "INT64": np.int64, "BOOL": np.bool_}
DEVICE_MEMORY = ("auto", "torch", "pycuda", "host")


def memory_backend():
    """SANET_DEVICE_MEMORY: auto (torch CUDA, else pycuda), torch, pycuda, or host (numpy buffers; only for
    TensorRT stand-ins that read host addresses, such as the test simulator)."""
    choice = os.environ.get("SANET_DEVICE_MEMORY", "auto").strip().lower() or "auto"
    if choice not in DEVICE_MEMORY:
        raise SanetError("SANET_DEVICE_MEMORY={} is not one of {}".format(choice, ", ".join(DEVICE_MEMORY)))
    if choice == "auto":
        import torch

        return "torch" if torch.cuda.is_available() else "pycuda"
    return choice


class TorchMemory:
    """Device buffers as torch CUDA tensors on a private stream (nothing beyond torch needed)."""

    argmax_on_device = True  # class_map() below; pycuda buffers bring logits back for a host argmax

    def __init__(self):
        import torch

        self.torch = torch
        self.stream = torch.cuda.Stream()
        self.handle = self.stream.cuda_stream

    def empty(self, shape, dtype):
        dtype = self.torch.from_numpy(np.empty(0, dtype)).dtype
        with self.torch.cuda.stream(self.stream):  # the caching allocator ties the block to this stream: reused in its order
            return self.torch.empty(tuple(shape), dtype=dtype, device="cuda")

    def pointer(self, buffer):
        return buffer.data_ptr()

    def upload(self, buffer, array):
        with self.torch.cuda.stream(self.stream):
            buffer.copy_(self.torch.from_numpy(np.ascontiguousarray(array)), non_blocking=False)

    def download(self, buffer):
        with self.torch.cuda.stream(self.stream):
            host = buffer.cpu()
        return host.numpy()

    def class_map(self, buffer, argmax, dtype):
        """argmax over channels on the device (logits), then only the (B, H, W) map crosses to the host."""
        with self.torch.cuda.stream(self.stream):
            classes = buffer.argmax(dim=1) if argmax else buffer
            host = classes.to(self.torch.from_numpy(np.empty(0, dtype)).dtype).cpu()
        return host.numpy()

    def synchronize(self):
        self.stream.synchronize()


class PycudaMemory:
    """Device buffers through pycuda, for machines whose torch has no CUDA (no argmax kernel here)."""

    argmax_on_device = False

    def __init__(self):
        # TensorRT runs in the device's primary context; pycuda.autoinit would create a second one.
        require("pycuda.autoprimaryctx", "install pycuda (or a CUDA build of torch) to run TensorRT engines")
        self.cuda = require("pycuda.driver", "install pycuda")
        self.stream = self.cuda.Stream()
        self.handle = self.stream.handle

    def empty(self, shape, dtype):
        return self.cuda.mem_alloc(int(np.prod(shape)) * np.dtype(dtype).itemsize), tuple(shape), np.dtype(dtype)

    def pointer(self, buffer):
        return int(buffer[0])

    def upload(self, buffer, array):
        self.cuda.memcpy_htod_async(buffer[0], np.ascontiguousarray(array), self.stream)

    def download(self, buffer):
        host = np.empty(buffer[1], buffer[2])
        self.cuda.memcpy_dtoh_async(host, buffer[0], self.stream)
        self.stream.synchronize()
        return host

    def synchronize(self):
        self.stream.synchronize()


class HostMemory:
    """Buffers in host memory (numpy arrays, pointer = their address), chosen with SANET_DEVICE_MEMORY=host.
    Real TensorRT needs device memory; this serves stand-ins that read host addresses (the test simulator)."""

    handle = 0
    argmax_on_device = False

    def empty(self, shape, dtype):
        return np.empty(tuple(shape), dtype)

    def pointer(self, buffer):
        return buffer.ctypes.data

    def upload(self, buffer, array):
        np.copyto(buffer, np.ascontiguousarray(array, buffer.dtype))

    def download(self, buffer):
        return buffer.copy()

    def synchronize(self):
        pass


def device_memory():
    """Buffers for TensorRT I/O: SANET_DEVICE_MEMORY picks torch CUDA, pycuda or host (default torch, else pycuda)."""
    return {"torch": TorchMemory, "pycuda": PycudaMemory, "host": HostMemory}[memory_backend()]()


def numpy_dtype(dtype):
    """TensorRT DataType -> numpy dtype (see NUMPY_DTYPES for why not trt.nptype)."""
    if dtype.name not in NUMPY_DTYPES:
        raise SanetError("TensorRT tensor type {} has no numpy equivalent here".format(dtype.name))
    return np.dtype(NUMPY_DTYPES[dtype.name])
