"""Shared fixtures: paths to ../shared, optional backends, and session-scoped trained artefacts."""
import pathlib
import types

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REAL = SHARED / "data" / "real"


@pytest.fixture(scope="session")
def shared_docs():
    docs = SHARED / "docs"
    if not docs.is_dir():
        pytest.skip("../shared/docs is absent in this checkout")
    return docs


@pytest.fixture(scope="session")
def real_data():
    if not REAL.is_dir():
        pytest.skip("../shared/data/real is absent: real Cityscapes/CamVid files are not in this checkout")
    return REAL


@pytest.fixture(scope="session")
def ort():
    return pytest.importorskip("onnxruntime", reason="onnxruntime not installed: pip install 'sanet[onnx]'")


@pytest.fixture
def sanet_cli(capsys):
    """``python -m sanet.cli ARGV`` in-process (the same exit codes and messages, without a new interpreter per call;
    an exception that escapes the CLI fails the test) -> namespace(returncode, stdout, stderr)."""
    from sanet.cli import main

    def run(*argv):
        capsys.readouterr()  # what came before is not this command's output
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return run


def small_train_config(data, out, **overrides):
    """A SANet training config that runs in seconds on 2 CPU cores."""
    from sanet.train import TrainConfig

    values = dict(dataset="cityscapes", data=str(data), variant="sanet", classes=19, crop=[128, 256],
                  scale_range=[0.75, 1.25], jitter=0.2, batch_size=4, epochs=8, lr=0.05, warmup_iters=5,
                  ohem_min_kept=8000, val_every=4, workers=0, amp=False, out=str(out), seed=0)
    values.update(overrides)
    return TrainConfig(**values)


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory):
    """24 train / 6 val generated frames at 128x256 (Cityscapes layout)."""
    from sanet.synth import SynthConfig, generate_dataset

    root = tmp_path_factory.mktemp("synth_small")
    generate_dataset(str(root), SynthConfig(128, 256, train=24, val=6, seed=0))
    return root


@pytest.fixture(scope="session")
def trained(synth_small, tmp_path_factory):
    """A SANet trained for ~1 minute on synth_small: (trainer, history, best checkpoint path)."""
    from sanet.train import train

    out = tmp_path_factory.mktemp("trained")
    trainer, history, _ = train(small_train_config(synth_small, out))
    return trainer, history, out / "best.safetensors"


RESOLUTIONS = [(128, 256), (96, 192)]


@pytest.fixture(scope="session")
def shipped():
    """The shipped checkpoint (sanet/weights: 62.35 % synthetic val mIoU): a network whose logits are not near-tied,
    so INT8 and FP16 parity budgets measure quantization, not the coin flips of a barely trained model."""
    from sanet.checkpoints import shipped_checkpoint

    path = shipped_checkpoint()
    assert path is not None, "sanet/weights/sanet_synth.safetensors is missing from this checkout"
    return path


CAMVID = SHARED / "data" / "camvid"


@pytest.fixture(scope="session")
def camvid():
    """Real CamVid (train/val with labels, 480x360) in ../shared; its test split is held out and never read."""
    if not (CAMVID / "val").is_dir():
        pytest.skip("../shared/data/camvid is absent: the real CamVid frames are not in this checkout")
    return CAMVID


@pytest.fixture(scope="session")
def shipped_camvid():
    """The shipped real-CamVid checkpoint (sanet/weights/sanet_camvid.safetensors, 11 classes)."""
    from sanet.checkpoints import shipped_checkpoint

    path = shipped_checkpoint("camvid")
    assert path is not None, "sanet/weights/sanet_camvid.safetensors is missing from this checkout"
    return path


@pytest.fixture(scope="session")
def exported(shipped, tmp_path_factory, ort):
    """The shipped checkpoint as a model and as FP32 ONNX files at RESOLUTIONS: (model, {size: path})."""
    from sanet.checkpoints import load_model
    from sanet.export import ExportConfig, export_onnx

    out = tmp_path_factory.mktemp("onnx")
    model = load_model(shipped)
    paths = {}
    for height, width in RESOLUTIONS:
        paths[(height, width)] = out / "sanet_{}x{}.onnx".format(height, width)
        export_onnx(model, paths[(height, width)], ExportConfig(height, width), source_sha256="test")
    return model, paths


def _trt_api_params():
    import trtsim

    files = trtsim.api_files()
    return [pytest.param(path, id=path.stem) for path in files] or [pytest.param(None, id="no-tensorrt-api")]


@pytest.fixture(scope="session", params=_trt_api_params())
def trt_api(request):
    """One TensorRT API listing (SANET_TRT_API: a file or folder; default ../shared/docs/tensorrt-api)."""
    if request.param is None:
        import trtsim

        pytest.skip("no TensorRT API listing: {} is absent and SANET_TRT_API is unset".format(trtsim.API_DIR))
    return request.param


@pytest.fixture(scope="session")
def trt_session(trt_api):
    """A session-wide simulation of ``trt_api`` (shared by the session-scoped engine fixtures)."""
    import trtsim

    return trtsim.simulate(trt_api)


@pytest.fixture()
def trt_sim(trt_session):
    """The simulated ``tensorrt`` in sys.modules and host-memory I/O buffers, both undone afterwards."""
    import trtsim

    with trtsim.installed(trt_session):
        yield trt_session
