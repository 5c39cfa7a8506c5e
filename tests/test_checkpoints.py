"""Checkpoint formats: round trips, reference-repo files, and errors users can cause."""
import pathlib

import pytest
import torch

from sanet.checkpoints import load_model, read_checkpoint, save_checkpoint
from sanet.errors import SanetError
from sanet.model import build_model


def perturbed(model):
    with torch.no_grad():
        for value in model.state_dict().values():
            if value.dtype.is_floating_point:
                value.add_(torch.randn_like(value) * 0.01)
    return model


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_round_trip_rebuilds_model_from_file_alone(tmp_path, suffix):
    model = perturbed(build_model("sanet-tiny", 11)).eval()
    path = tmp_path / ("ckpt" + suffix)
    save_checkpoint(path, model)
    loaded = load_model(path)
    assert loaded.config.variant == "sanet-tiny" and loaded.config.num_classes == 11
    assert loaded.config.class_names[0] == "sky"
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


class Opaque:
    """A value torch.save pickles but the safe loader (weights_only=True) refuses."""


def test_checkpoint_that_does_not_read_back_never_replaces_a_good_one(tmp_path):
    path = tmp_path / "last.pt"
    good = perturbed(build_model("sanet-tiny", 11)).eval()
    save_checkpoint(path, good, {"epoch": 3})
    before = path.read_bytes()
    with pytest.raises(SanetError, match="cannot save checkpoint .*last.pt: the written file does not read back"):
        save_checkpoint(path, perturbed(build_model("sanet-tiny", 11)), {"epoch": 4, "optimizer": Opaque()})
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert read_checkpoint(path)[2] == {"epoch": 3}


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "module"])
def test_reference_format_state_dict_loads(tmp_path, wrap):
    model = perturbed(build_model("sanet", 19)).eval()
    state = model.state_dict()
    if wrap == "module":
        state = {"module." + k: v for k, v in state.items()}
    payload = {"state_dict": state} if wrap == "state_dict" else state
    path = tmp_path / "reference.pth"
    torch.save(payload, path)
    loaded = load_model(path)
    assert loaded.config.variant == "sanet" and loaded.config.num_classes == 19
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_renamed_key_is_named_in_error(tmp_path):
    state = build_model("sanet", 19).state_dict()
    state["sff1.conv_lo.0.weight"] = state.pop("sff1.conv_low.0.weight")
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(SanetError, match=r"missing: sff1.conv_low.0.weight.*unexpected: sff1.conv_lo.0.weight"):
        load_model(tmp_path / "bad.pth")


def test_misshaped_key_is_named_in_error(tmp_path):
    state = build_model("sanet", 19).state_dict()
    state["sce.spp.spp_2.conv.weight"] = torch.zeros(64, 128, 1, 1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(SanetError, match=r"mis-shaped.*sce.spp.spp_2.conv.weight \(64, 128, 1, 1\)"):
        load_model(tmp_path / "bad.pth")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_truncated_file_gives_clear_error(tmp_path, suffix):
    path = tmp_path / ("ckpt" + suffix)
    save_checkpoint(path, build_model("sanet-tiny", 11))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SanetError, match="corrupt, truncated"):
        read_checkpoint(path)


def test_pickled_objects_are_refused(tmp_path):
    # Any class outside torch's weights_only allow-list stands for a malicious pickle payload.
    torch.save({"state_dict": {}, "payload": pathlib.PurePosixPath("/etc/passwd")}, tmp_path / "evil.pt")
    with pytest.raises(SanetError, match="corrupt, truncated or not a checkpoint"):
        read_checkpoint(tmp_path / "evil.pt")


def test_cli_prints_one_line_errors(tmp_path, sanet_cli):
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    for argv in ([str(bad)], [str(tmp_path / "missing.pt")]):
        result = sanet_cli("info", *argv)
        assert result.returncode == 1
        assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
        assert "Traceback" not in result.stderr


def test_info_table_from_checkpoint(tmp_path, sanet_cli):
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, build_model("sanet", 19, aux_head=False))
    result = sanet_cli("info", str(path))
    assert result.returncode == 0, result.stderr
    assert "12.57" in result.stdout and "77.3" in result.stdout and "309.3" in result.stdout


def test_save_fp16_writes_the_deployment_checkpoint(tmp_path, sanet_cli):
    torch.manual_seed(0)
    trained = build_model("sanet", 11)  # with the training-only auxiliary head
    save_checkpoint(tmp_path / "best.safetensors", trained)
    out = tmp_path / "ship.safetensors"
    result = sanet_cli("info", tmp_path / "best.safetensors", "--save-fp16", out)
    assert result.returncode == 0 and "sha256" in result.stdout, result.stderr
    state, config, _ = read_checkpoint(out)
    assert not any(key.startswith("conv_out16.") for key in state) and config.aux_head is False
    assert {value.dtype for value in state.values() if value.is_floating_point()} == {torch.float16}
    shipped = load_model(out)
    for key, value in shipped.state_dict().items():  # the float32 network holds the fp16-rounded weights
        want = trained.state_dict()[key]
        assert torch.equal(value, want.half().float() if want.is_floating_point() else want), key
    refused = sanet_cli("info", tmp_path / "best.safetensors", "--save-fp16", tmp_path / "ship.pt")
    assert refused.returncode == 1 and "*.safetensors" in refused.stderr and not (tmp_path / "ship.pt").exists()
