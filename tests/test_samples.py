"""What the model sees: dataset items carry the source and target images and keypoints of their row, in the
right slots; tuples files (multi-source) round-trip; first-format checkpoints still generate the same images;
generation builds no discriminator and no VGG; stage configs are checked."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from tiny_market import TINY_PATN, make_root

from reidaug.data.images import read_image, to_uint8
from reidaug.data.keypoints import read_annotations
from reidaug.data.pairs import make_tuples, read_pairs, source_names, write_tuples
from reidaug.data.samples import SampleDataset, image_index, to_device
from reidaug.errors import ReidaugError
from reidaug.models.checkpoint import load_checkpoint, load_generator

DATA = Path(__file__).parent / "data" / "pre_contract"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("market"), ids=3, per_id=4)


def test_item_holds_its_rows_sources_and_target_in_their_slots(root):
    ann = read_annotations(root / "annotations" / "train.csv")
    a, b, c = "0001_c1s1_000100_01.jpg", "0001_c3s1_000102_01.jpg", "0001_c4s1_000103_01.jpg"
    table = pd.DataFrame({"from_0": [a, c], "from_1": [c, a], "to": [b, a]})
    ds = SampleDataset.from_table(table, image_index(root), ann, num_sources=2)
    item = ds[0]
    assert item["src_img"].shape == (2, 3, 128, 64) and item["src_kp"].shape == (2, 18, 2)
    for k, name in enumerate((a, c)):
        assert torch.equal(item["src_img"][k], torch.from_numpy(read_image(root / "bounding_box_train" / name)).permute(2, 0, 1))
        assert torch.equal(item["src_kp"][k], torch.from_numpy(ann[name].astype(np.int64)))
    assert torch.equal(item["tgt_img"], torch.from_numpy(read_image(root / "bounding_box_train" / b)).permute(2, 0, 1))
    assert torch.equal(item["tgt_kp"], torch.from_numpy(ann[b].astype(np.int64)))
    assert not torch.equal(item["src_kp"][0], item["tgt_kp"])
    one = SampleDataset.from_table(table, image_index(root), ann, num_sources=1)[1]  # the first source column
    assert one["src_img"].shape[0] == 1 and torch.equal(one["src_kp"][0], torch.from_numpy(ann[c].astype(np.int64)))
    batch = to_device(torch.utils.data.default_collate([ds[0], ds[1]]), torch.device("cpu"), channels_last=True)
    assert batch["src_img"].shape == (2, 2, 3, 128, 64) and batch["src_img"].min() >= -1
    assert batch["src_img"][:, 0].is_contiguous(memory_format=torch.channels_last)


def test_tuples_follow_the_pairs_identity_distribution_and_round_trip(root, tmp_path):
    ann = read_annotations(root / "annotations" / "train.csv")
    t = make_tuples(ann, 3, seed=0)
    assert list(t.columns) == ["from_0", "from_1", "from_2", "to"]
    assert t["to"].str[:4].value_counts().to_dict() == {"0001": 12, "0002": 12, "0003": 12}  # n(n-1), n = 4
    src = source_names(t, 3)
    assert all({s[:4] for s in row} == {to[:4]} for row, to in zip(src, t["to"]))  # same identity
    assert all(to not in row and len(set(row)) == 3 for row, to in zip(src, t["to"]))  # 3 others exist: distinct
    assert make_tuples(ann, 3, seed=0).equals(t) and not make_tuples(ann, 3, seed=1).equals(t)
    write_tuples(tmp_path / "t.csv", t)
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "from_0,from_1,from_2,to"
    back = read_pairs(tmp_path / "t.csv")
    assert back.equals(t)
    assert source_names(back, 2).tolist() == t[["from_0", "from_1"]].to_numpy().tolist()  # K = 3 serves M = 2
    with pytest.raises(ReidaugError, match="takes 4 sources per target; the pairs table has 3"):
        source_names(back, 4)


def test_first_format_checkpoint_generates_what_it_generated(root, tmp_path, run_cli):
    """tests/data/pre_contract: a tiny PATN checkpoint written before the method contract, and the images its
    generator made then on three pairs of `make_root(ids=3, per_id=3)`."""
    old_root = make_root(tmp_path / "m", ids=3, per_id=3)
    expected = torch.load(DATA / "patn_tiny_expected.pt", weights_only=True)
    ckpt = load_checkpoint(DATA / "patn_tiny.pt")
    assert ckpt["converted_from"] == "reidaug-gan-checkpoint/1" and ckpt["inference"] == "generator"
    generator, _ = load_generator(DATA / "patn_tiny.pt")
    pairs = pd.DataFrame(expected["pairs"])
    ann = read_annotations(old_root / "annotations" / "train.csv")
    ds = SampleDataset(pairs["from"], pairs["to"], image_index(old_root), ann)
    batch = to_device(torch.utils.data.default_collate([ds[i] for i in range(len(ds))]), torch.device("cpu"))
    with torch.no_grad():
        images = torch.from_numpy(to_uint8(generator(batch)["image"]))
    assert torch.equal(images, expected["images"])
    code, _, err = run_cli("train", "--method", "patn", "--data", old_root, "--out", tmp_path / "run", "--resume")
    assert code == 2  # nothing to resume there
    run = tmp_path / "old" / "checkpoints"
    run.mkdir(parents=True)
    (run / "latest.pt").write_bytes((DATA / "patn_tiny.pt").read_bytes())
    code, _, err = run_cli("train", "--method", "patn", "--data", old_root, "--out", tmp_path / "old", "--resume",
                           "--device", "cpu")  # fmt: skip
    assert code == 2 and len(err.strip().splitlines()) == 1 and "first reidaug format" in err, err


def test_generate_and_augment_build_no_discriminator_and_no_vgg(root, tmp_path, monkeypatch, run_cli):
    """A PATN checkpoint whose loss config asks for VGG weights that exist nowhere still generates and augments,
    and neither step constructs a discriminator or a VGG."""
    from reidaug.augment.build import AugmentConfig, augment
    from reidaug.config import load_config
    from reidaug.models import discriminators, vgg
    from reidaug.train.config import load_method_config
    from reidaug.train.trainer import train

    cfg = load_method_config("patn", None, [*TINY_PATN, "train.iterations=1", "loss.vgg_weights=none",
                                            "loss.lambda_perceptual=1"])  # fmt: skip
    with pytest.warns(UserWarning, match="randomly initialised"):
        ckpt_path = train(cfg, root, tmp_path / "run", device="cpu", show_progress=False).checkpoint
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["config"]["loss"]["vgg_weights"] = str(tmp_path / "no-such-vgg19.pth")
    torch.save(ckpt, ckpt_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))

    def forbidden(*args, **kwargs):
        raise AssertionError("generation built a discriminator or a VGG")

    for cls in (discriminators.ResnetDiscriminator, discriminators.PatchDiscriminator, vgg.VGG19Features):
        monkeypatch.setattr(cls, "__init__", forbidden)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\n0001_c1s1_000100_01.jpg,0001_c2s1_000101_01.jpg\n")
    code, _, err = run_cli("generate", "--checkpoint", tmp_path / "run", "--pairs", pairs, "--data", root, "--out",
                           tmp_path / "gen", "--device", "cpu", "--no-progress")  # fmt: skip
    assert code == 0, err
    assert (tmp_path / "gen" / "0001_c1s0_000000_00.jpg").is_file()
    acfg = load_config(AugmentConfig, None, ["portion=0.5", "generate.num_workers=0"])
    r = augment(root, tmp_path / "aug", tmp_path / "run", acfg, device="cpu", show_progress=False)
    assert r.generated == r.removed > 0
    code, _, err = run_cli("generate", "--checkpoint", tmp_path / "run", "--pairs", pairs, "--data", root, "--out",
                           tmp_path / "gen2", "--device", "cpu", "--set", "sources=2")  # fmt: skip
    assert code == 2 and "--sources 2: the patn generator takes exactly 1 source image" in err, err


@pytest.mark.parametrize("stages, match", [
    ([{"name": "a", "until": 3}, {"name": "a"}], "stage names must be unique"),
    ([{"name": "a"}, {"name": "b"}], "only the last stage may leave 'until' unset"),
    ([{"name": "a", "until": 3}, {"name": "b", "until": 2}, {"name": "c"}], "ends at iteration 2"),
    ([{"name": "a", "until": 3, "train": ["critic"]}, {"name": "b"}], "trains unknown optimizers ['critic']"),
    ([{"name": "a", "until": 3, "loss": {"lambda_flow": 1}}, {"name": "b"}], "unknown loss settings ['lambda_flow']"),
])  # fmt: skip
def test_stage_configs_are_checked(stages, match):
    from reidaug.train.config import config_from_dict, stage_spans

    with pytest.raises(ReidaugError, match=match.replace("[", r"\[").replace("]", r"\]")):
        config_from_dict("patn", {"stages": stages, "train": {"iterations": 10}})
    cfg = config_from_dict("patn", {"stages": [{"name": "a", "until": 3, "train": ["generator"],
                                                "loss": {"lambda_l1": 1.0}}, {"name": "b"}],
                                    "train": {"iterations": 10}})  # fmt: skip
    spans = stage_spans(cfg)
    assert [(s[0], s[1], s[2].name, s[3].lambda_l1) for s in spans] == [(0, 3, "a", 1.0), (3, 10, "b", 10.0)]


def test_optim_names_must_be_the_methods():
    from reidaug.train.config import config_from_dict

    with pytest.raises(ReidaugError, match="optim names"):
        config_from_dict("patn", {"optim": {"critic": {"lr": 1e-4}}})


def test_discriminator_factory_patch_and_spectral_norm():
    from reidaug.models.discriminators import DiscriminatorConfig, build_discriminator

    d = build_discriminator(6, DiscriminatorConfig(kind="patch", ndf=8, n_downsampling=3), "batch")
    assert d(torch.randn(2, 6, 128, 64)).shape == (2, 1, 14, 6)  # pix2pix n_layers 3
    sn = build_discriminator(6, DiscriminatorConfig(ndf=8, n_blocks=1, spectral_norm=True), "none")
    convs = [m for m in sn.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(torch.nn.utils.parametrize.is_parametrized(m, "weight") for m in convs)
    with pytest.raises(ReidaugError, match="discriminator.kind"):
        DiscriminatorConfig(kind="unet")


def test_amp_policy():
    from reidaug.utils.runtime import Amp

    cpu = Amp(torch.device("cpu"), True, "fp16")
    assert not cpu.enabled and not cpu.needs_scaler and not cpu.scaler().is_enabled()
    with cpu.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32  # never autocast on the CPU
    with pytest.raises(ReidaugError, match="amp_dtype"):
        Amp(torch.device("cpu"), True, "fp8")


def test_generation_and_augmentation_never_import_training(tmp_path):
    """Data flows down the pipeline: generating (and planning an augmentation) loads no reidaug.train module."""
    import subprocess
    import sys

    code = f"""
import sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from tiny_market import make_root
import reidaug.augment.build, reidaug.augment.protocol
from reidaug.generate import generate
root = make_root(__import__("pathlib").Path({str(tmp_path)!r}) / "m")
open({str(tmp_path / "p.csv")!r}, "w").write("from,to\\n0001_c1s1_000100_01.jpg,0001_c2s1_000101_01.jpg\\n")
r = generate({str(DATA / "patn_tiny.pt")!r}, {str(tmp_path / "p.csv")!r}, root, {str(tmp_path / "out")!r},
             device="cpu", show_progress=False)
assert r.written == 1
print(sorted(m for m in sys.modules if m.startswith("reidaug.train")))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip().splitlines()[-1] == "[]"
