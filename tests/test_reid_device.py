"""The device-resident re-ID training data (reidaug.reid.device_data): the recipe's torchreid transforms rebuilt as
batched tensor operations, batches in the order of torchreid's own sampler, and the same mAP as the loader path
within seed noise."""

from __future__ import annotations

import statistics

import numpy as np
import pytest
import torch
from PIL import Image
from test_reid import make_root

from reidaug.errors import ReidaugError
from reidaug.reid._torchreid import reid
from reidaug.reid.config import ReidConfig, validate
from reidaug.reid.device_data import MEAN, STD, DeviceAugment, DeviceTrainLoader, decode_all

H, W = 64, 32


def images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random uint8 images (n, 3, 32, 16): a 4x2 colour grid, upsampled."""
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 2, generator=g), size=(32, 16), mode="bilinear")
    return (x * 255).round().to(torch.uint8)


def normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def test_resize_and_normalisation_match_torchreid_test_transform():
    x = images(4)
    _, transform_te = reid.data.transforms.build_transforms(H, W, transforms=[])
    ref = torch.stack([transform_te(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in x])
    out = DeviceAugment(H, W, [], torch.device("cpu"), seed=0)(x)
    assert out.shape == ref.shape == (4, 3, H, W)
    assert (out - ref).abs().mean() < 0.01 and (out - ref).abs().max() < 0.05  # PIL resizes in uint8


def test_flip_and_crop_give_flips_and_crops_of_the_resized_image_half_of_the_time():
    x = images(64)
    plain = DeviceAugment(H, W, [], torch.device("cpu"), 0)(x)
    flipped = DeviceAugment(H, W, ["random_flip"], torch.device("cpu"), 0)(x)
    is_flip = [torch.equal(f, p.flip(-1)) and not torch.equal(f, p) for f, p in zip(flipped, plain)]
    assert all(torch.equal(f, p) or k for f, p, k in zip(flipped, plain, is_flip))
    assert 16 <= sum(is_flip) <= 48

    crop = DeviceAugment(H, W, ["random_crop"], torch.device("cpu"), 0)
    big = torch.nn.functional.interpolate(plain * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(
        1, 3, 1, 1), size=(72, 36), mode="bilinear", antialias=True)  # fmt: skip
    out = crop(x)
    cropped = 0
    for o, p, b in zip(out, plain, normalise(big)):
        if torch.allclose(o, p, atol=1e-5):
            continue
        offsets = [(y, x0) for y in range(9) for x0 in range(5) if torch.allclose(o, b[:, y : y + H, x0 : x0 + W],
                                                                                 atol=1e-5)]  # fmt: skip
        assert len(offsets) == 1, "neither the resized image nor a crop of its 1.125x enlargement"
        cropped += 1
    assert 16 <= cropped <= 48


def test_random_erase_fills_one_rectangle_with_the_mean_values():
    x = images(64)
    plain = DeviceAugment(H, W, [], torch.device("cpu"), 0)(x)
    out = DeviceAugment(H, W, ["random_erase"], torch.device("cpu"), 0)(x)
    erased = 0
    for o, p in zip(out, plain):
        changed = (o != p).any(0)
        if not changed.any():
            continue
        erased += 1
        rows, cols = changed.any(1).nonzero()[:, 0], changed.any(0).nonzero()[:, 0]
        box = o[:, rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        torch.testing.assert_close(box, torch.tensor(MEAN).view(3, 1, 1).expand_as(box))  # torchreid's fill
        area = box.shape[1] * box.shape[2] / (H * W)
        assert 0.015 <= area <= 0.41 and box.shape[1] < H and box.shape[2] < W
    assert 16 <= erased <= 48


def test_loader_follows_torchreids_sampler_and_drops_the_last_batch(tmp_path):
    root = make_root(tmp_path / "root", train_pids=range(1, 9), per=4)
    data = [(str(p), i // 4, 0, 0) for i, p in enumerate(sorted((root / "bounding_box_train").iterdir()))]
    sampler = reid.data.sampler.RandomIdentitySampler(data, 8, 4)
    aug = DeviceAugment(H, W, ["random_flip"], torch.device("cpu"), 0)
    loader = DeviceTrainLoader.from_items(data, sampler, 8, aug, torch.device("cpu"), workers=2)
    assert loader.images.dtype == torch.uint8 and loader.images.shape == (32, 3, 32, 16)
    assert len(loader) == len(sampler) // 8 == 4
    batches = list(loader)
    assert len(batches) == 4 and all(b["img"].shape == (8, 3, H, W) for b in batches)
    for b in batches:  # identity-balanced: 2 identities x 4 images
        assert sorted(np.bincount(b["pid"].numpy()).tolist())[-2:] == [4, 4]
    assert torch.equal(decode_all([data[0][0]])[0], loader.images[0])


def test_unsupported_transform_is_one_line():
    with pytest.raises(ReidaugError, match="train_data=device supports the transforms"):
        validate(ReidConfig(train_data="device", transforms=["color_jitter"]))
    with pytest.raises(ReidaugError, match="train_data must be one of"):
        validate(ReidConfig(train_data="gpu"))


def test_device_path_gives_the_loader_paths_map_within_seed_noise(tmp_path):
    """Seed noise: over seeds 1-3 the two paths' mean mAPs differ by at most twice the standard error of that
    difference (each path's seed-to-seed sd), and by no more than 1.5 points when both paths are seed-stable."""
    from reidaug.reid.run import reid_eval

    root = make_root(tmp_path / "root", train_pids=range(1, 9), test_pids=range(101, 109), per=4)
    maps = {}
    for path in ("loader", "device"):
        maps[path] = []
        for seed in (1, 2, 3):
            cfg = ReidConfig(backbone="osnet_x0_25", height=32, width=16, batch_size=8, epochs=4, lr=0.003,
                             scheduler="none", workers=0, threads=1, transforms=["random_flip", "random_crop",
                             "random_erase"], train_data=path, seed=seed, save_checkpoint=False,
                             checkpoint_every=0, eval_batch_size=64)  # fmt: skip
            res = reid_eval(root, cfg, tmp_path / f"{path}{seed}.json", show_progress=False)
            assert res["train_data"] == path
            maps[path].append(res["mAP"])
    mean = {k: statistics.mean(v) for k, v in maps.items()}
    se = (statistics.variance(maps["loader"]) / 3 + statistics.variance(maps["device"]) / 3) ** 0.5
    assert min(mean.values()) > 40, maps  # both learn: chance is about 1 / 8 identities
    assert abs(mean["device"] - mean["loader"]) <= max(2 * se, 1.5), maps
