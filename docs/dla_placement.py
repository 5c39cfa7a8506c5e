"""How much of SANet runs on a Jetson DLA, by simulation (tests/trtsim.py): the placement table of docs/simulator.md.

    python docs/dla_placement.py [CHECKPOINT] [--res 512 1024 --res 384 512] [--platform xavier orin]

For each resolution and platform, SANet as exported today and with --dla-friendly is built in FP16 for DLA core 0
with GPU fallback under TensorRT 8.5 (the 8.6.1 listing, as JetPack 5 ships it), twice:
  builder   every layer defaulted to DLA, as trtexec --useDLACore=0 --allowGPUFallback does
  sanet     sanet-export's build (engines._place_on_dla: lone DLA-capable layers kept on the GPU), placement read
            back from the built engine as the sidecar records it
Placement depends on the graph, not the weights: without a checkpoint a seeded random-init SANet is used.
The DLA rules, the grouping into subgraphs and the 16-per-core limit are the simulator's (docs/simulator.md);
a device confirms them (trtexec --verbose lists "Layers Running on DLA").
"""
import argparse
import os
import pathlib
import sys
import tempfile

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import trtsim  # noqa: E402  (the simulator lives with the tests)

from sanet.checkpoints import load_model  # noqa: E402
from sanet.engines import EngineConfig, build_engine  # noqa: E402
from sanet.export import ExportConfig, export_onnx  # noqa: E402
from sanet.model import build_model  # noqa: E402


def builder_alone(sim, onnx_path):
    """(layers on DLA, subgraphs, layers, switched by the subgraph limit) for a plain DLA build of ``onnx_path``."""
    trt = sim.module
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as handle:
        assert parser.parse(handle.read())
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = 0
    logged = len(sim.log)
    assert builder.build_serialized_network(network, config) is not None
    placement = sim.events[-1][1]["placement"]
    switched = sum(1 for _, line in sim.log[logged:] if line.startswith("DLA supports only"))
    return sum(len(island) for island in placement["islands"]), len(placement["islands"]), network.num_layers, switched


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--res", nargs=2, type=int, action="append", metavar=("H", "W"))
    parser.add_argument("--platform", nargs="+", default=["xavier", "orin"], choices=["xavier", "orin"])
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load_model(args.checkpoint) if args.checkpoint else build_model("sanet", 19, aux_head=False).eval()
    work = pathlib.Path(tempfile.mkdtemp(prefix="dla_placement_"))
    print("| input | platform | export | builder alone: DLA layers / subgraphs | sanet-export: DLA layers / subgraphs "
          "(lone kept on GPU) |")
    print("|---|---|---|---|---|")
    for height, width in args.res or [(512, 1024), (384, 512)]:
        for friendly in (False, True):
            onnx_path = work / "sanet_{}x{}{}.onnx".format(height, width, "_dlafriendly" if friendly else "")
            export_onnx(model, onnx_path, ExportConfig(height, width, dla_friendly=friendly), source_sha256="x", verify=False)
            for platform in args.platform:
                sim = trtsim.simulate(trtsim.API_DIR / "tensorrt-8.6.1.txt", platform)
                with trtsim.installed(sim):
                    on_dla, subgraphs, total, switched = builder_alone(sim, onnx_path)
                    layers = build_engine(str(onnx_path), str(work / (onnx_path.stem + ".plan")),
                                          EngineConfig("fp16", dla_core=0), report=lambda line: None)["layers"]
                print("| {}x{} | {} | {} | {} of {} / {}{} | {} of {} / {} ({}) |".format(
                    height, width, platform, "DLA-friendly" if friendly else "as today", on_dla, total, subgraphs,
                    ", {} switched to GPU by the limit".format(switched) if switched else "",
                    len(layers["dla"]), total, len(layers["subgraphs"]), len(layers["kept_on_gpu"])))
    print("\nCommand: python docs/dla_placement.py {}".format(" ".join(sys.argv[1:] if argv is None else argv)))


if __name__ == "__main__":
    main()
