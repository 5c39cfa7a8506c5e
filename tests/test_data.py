"""Loaders on the real files and on generated scenes; augmentation keeps image and label together."""
import numpy as np
import pytest

from sanet.constants import IGNORE_INDEX
from sanet.data import (
    CITYSCAPES_PALETTE,
    LABEL_TO_TRAIN,
    TrainTransform,
    cityscapes_samples,
    find_images,
    folder_samples,
    open_dataset,
    read_image,
    read_label,
    write_png,
)
from sanet.errors import SanetError
from sanet.synth import SynthConfig, generate_dataset


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    generate_dataset(str(root), SynthConfig(128, 256, train=6, val=3, seed=1))
    return root


def test_real_cityscapes_lists_labelled_and_unlabelled_frames(real_data):
    root = str(real_data / "cityscapes")
    labelled = cityscapes_samples(root, "val")
    assert [s.label_kind for s in labelled] == ["trainIds", "trainIds"]
    everything = cityscapes_samples(root, "val", require_labels=False)
    assert len(everything) == 7 and sum(s.label is None for s in everything) == 5  # color-only frame counts as unlabelled
    assert open_dataset(root, "cityscapes", "val").unlabelled_skipped == 5
    assert open_dataset(root, "cityscapes", "val", require_labels=False).unlabelled_skipped == 0
    dataset = open_dataset(root, "cityscapes", "train")
    for index in range(len(dataset)):
        image, label, _ = dataset.load(index)
        assert image.shape == (1024, 2048, 3) and label.shape == (1024, 2048)
        assert set(np.unique(label)) <= set(range(19)) | {IGNORE_INDEX}


def test_real_mini_label_ids_map_to_train_ids(real_data):
    base = real_data / "cityscapes_mini_256x128" / "gtFine" / "val" / "frankfurt" / "frankfurt_000000_000294_gtFine_"
    mapped = LABEL_TO_TRAIN[read_label(str(base) + "labelIds.png")]
    reference = read_label(str(base) + "labelTrainIds.png")
    assert np.mean(mapped == reference) >= 0.997
    dataset = open_dataset(str(real_data / "cityscapes_mini_256x128"), "cityscapes", "val")
    assert dataset.samples[0].label_kind == "labelIds" and dataset.load(0)[1].shape == (128, 256)


def test_real_camvid_pairs(real_data):
    for split, count in (("train", 3), ("val", 2), ("test", 3)):
        dataset = open_dataset(str(real_data / "camvid"), "camvid", split)
        assert len(dataset) == count and dataset.num_classes == 11
        image, label, _ = dataset.load(0)
        assert image.shape == (360, 480, 3) and set(np.unique(label)) <= set(range(11)) | {IGNORE_INDEX}


def test_find_images_walks_subfolders_and_skips_label_folders(real_data):
    camvid = find_images(str(real_data / "camvid"))
    assert len(camvid) == 3 + 2 + 3 and not any("annot" in path for path in camvid)
    cityscapes = find_images(str(real_data / "cityscapes"))
    assert len(cityscapes) == len(list((real_data / "cityscapes" / "leftImg8bit").rglob("*.png"))) >= 9
    assert all("/leftImg8bit/" in path.replace("\\", "/") for path in cityscapes) and cityscapes == sorted(cityscapes)
    assert [s.image for s in folder_samples(str(real_data / "camvid"))] == camvid


def test_real_demo_images_decode_as_rgb(real_data):
    for sample in folder_samples(str(real_data / "demo_images")):
        image = read_image(sample.image)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


def test_synthetic_set_loads_with_many_classes(synth_root):
    dataset = open_dataset(str(synth_root), "cityscapes", "train")
    classes = set()
    for index in range(len(dataset)):
        image, label, _ = dataset.load(index)
        assert image.shape == (128, 256, 3) and label.shape == (128, 256)
        classes |= set(np.unique(label).tolist())
    assert len(classes - {IGNORE_INDEX}) >= 12


@pytest.mark.parametrize("config,message", [(SynthConfig(64, 128, train=-3), "--train -3 --val 50: frame counts"),
                                            (SynthConfig(64, 128, train=0, val=0), "at least one frame"),
                                            (SynthConfig(64, 128, seed=-1), "--seed -1"),
                                            (SynthConfig(60, 128), "multiples of 8")])
def test_synthetic_generation_rejects_impossible_settings_before_writing(tmp_path, config, message):
    with pytest.raises(SanetError, match=message):
        generate_dataset(str(tmp_path / "synth"), config)
    assert not (tmp_path / "synth").exists()


def test_synthetic_generation_is_deterministic_per_seed(tmp_path):
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        generate_dataset(str(tmp_path / name), SynthConfig(64, 128, train=2, val=1, seed=seed))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.png"))
    assert len(files) == 6
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
    assert any((tmp_path / "a" / f).read_bytes() != (tmp_path / "c" / f).read_bytes() for f in files)


def colour_coded(label):
    """An image whose colour is a function of the label, so image/label misalignment is visible."""
    lut = np.zeros((256, 3), np.uint8)
    lut[:19] = CITYSCAPES_PALETTE
    return lut[label]


def decode(image_tensor, transform):
    mean, std = np.asarray(transform.mean)[:, None, None], np.asarray(transform.std)[:, None, None]
    return np.clip((image_tensor.numpy() * std + mean) * 255 + 0.5, 0, 255).astype(np.uint8).transpose(1, 2, 0)


def test_augmentation_moves_image_and_label_together(synth_root):
    dataset = open_dataset(str(synth_root), "cityscapes", "train")
    _, label, _ = dataset.load(0)
    image = colour_coded(label)
    transform = TrainTransform(crop=(96, 160), jitter=0.0, seed=0)
    for trial in range(8):
        rng = np.random.default_rng(trial)
        out_image, out_label = transform(image, label, rng)
        decoded, out_label = decode(out_image, transform), out_label.numpy()
        valid = out_label != IGNORE_INDEX
        # Interior pixels (no class edge in a 3x3 window) must show their own label's colour.
        expected = colour_coded(np.where(valid, out_label, 0).astype(np.uint8))
        match = np.all(np.abs(decoded.astype(int) - expected.astype(int)) <= 2, axis=2)
        interior = valid.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                interior &= np.roll(np.roll(out_label, dy, 0), dx, 1) == out_label
        assert match[interior].mean() > 0.98, trial


def test_augmentation_mismatch_would_be_caught(synth_root):
    """The check above fails when the image is flipped but the label is not."""
    dataset = open_dataset(str(synth_root), "cityscapes", "train")
    _, label, _ = dataset.load(0)
    image = colour_coded(label)[:, ::-1]
    assert np.mean(np.all(image == colour_coded(label), axis=2)) < 0.9


def test_augmentation_is_deterministic(synth_root):
    dataset = open_dataset(str(synth_root), "cityscapes", "train", transform=TrainTransform(crop=(64, 64), seed=5))
    first, again = dataset[1], dataset[1]
    assert all(np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first, again))
    dataset.set_epoch(1)
    assert not np.array_equal(dataset[1][0].numpy(), first[0].numpy())


def test_bad_inputs_give_clear_errors(tmp_path, synth_root):
    with pytest.raises(SanetError, match="dataset root not found"):
        open_dataset(str(tmp_path / "nope"), "cityscapes")
    with pytest.raises(SanetError, match="Cityscapes split not found"):
        open_dataset(str(synth_root), "cityscapes", "test")
    broken = tmp_path / "broken.png"
    good = (synth_root / "leftImg8bit" / "val" / "synthville" / "synthville_000000_000019_leftImg8bit.png").read_bytes()
    broken.write_bytes(good[:200])
    with pytest.raises(SanetError, match="corrupt, truncated"):
        read_image(str(broken))
    gray, rgba = tmp_path / "gray.png", tmp_path / "rgba.png"
    write_png(str(gray), np.full((40, 48), 77, np.uint8))
    import cv2

    cv2.imwrite(str(rgba), np.dstack([np.full((40, 48, 3), (10, 20, 30), np.uint8), np.full((40, 48), 128, np.uint8)]))
    assert read_image(str(gray)).shape == (40, 48, 3)
    assert tuple(read_image(str(rgba))[0, 0]) == (30, 20, 10)  # BGRA on disk -> RGB, alpha dropped
    camvid = tmp_path / "camvid"
    write_png(str(camvid / "val" / "a.png"), np.zeros((32, 32, 3), np.uint8))
    with pytest.raises(SanetError, match="has no label"):
        open_dataset(str(camvid), "camvid", "val")
    write_png(str(camvid / "valannot" / "a.png"), np.full((32, 32), 40, np.uint8))
    with pytest.raises(SanetError, match="values above 11"):
        open_dataset(str(camvid), "camvid", "val").load(0)
