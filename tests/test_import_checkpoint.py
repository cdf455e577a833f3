"""`reidaug import-checkpoint`: published PATN and XingGAN state dicts become run folders whose generator gives the
images the published computation gives; files that do not fit, or that pickle code, are refused with one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from published_layouts import patn_forward, patn_state, xinggan_forward, xinggan_state
from tiny_market import make_root

from reidaug.augment.build import AugmentConfig, augment
from reidaug.data.keypoints import heatmaps, read_annotations
from reidaug.data.pairs import make_pairs, write_pairs
from reidaug.errors import ReidaugError
from reidaug.models.checkpoint import load_checkpoint, load_generator
from reidaug.train.published import import_checkpoint
from reidaug.utils.io import file_sha256


def batch(seed=0, n=2):
    g = torch.Generator().manual_seed(seed)
    kp = torch.randint(0, 60, (n, 2, 18, 2), generator=g)
    kp[:, :, :, 0] *= 2  # y spans the 128 rows
    kp[0, 0, 3] = -1  # a missing joint: an all-zero heatmap
    return {
        "src_img": torch.rand(n, 1, 3, 128, 64, generator=g) * 2 - 1,
        "src_kp": kp[:, :1],
        "tgt_kp": kp[:, 1],
    }


def published_output(forward, state, b):
    maps = [heatmaps(k, (128, 64), 6.0) for k in (b["src_kp"][:, 0], b["tgt_kp"])]
    with torch.no_grad():
        return forward(state, b["src_img"][:, 0], *maps)


@pytest.mark.parametrize(
    "source, state, forward, expect",
    [
        ("pose-transfer", patn_state(), patn_forward,  # Market: BN, dropout, a PyTorch 0.3 file (no counters)
         {"norm": "batch", "dropout": 0.5, "ngf": 8, "n_blocks": 2}),
        ("pose-transfer", {f"module.{k}": v for k, v in patn_state(batch=False, dropout=False, seed=1).items()},
         patn_forward, {"norm": "instance", "dropout": 0.0, "ngf": 8, "n_blocks": 2}),  # DeepFashion-style, DP
        ("xinggan", xinggan_state(counters=True), xinggan_forward, {"norm": "batch", "dropout": 0.5, "n_blocks": 2}),
        ("xinggan", xinggan_state(batch=False, n_blocks=3, seed=2), xinggan_forward, {"norm": "instance", "n_blocks": 3}),
    ],
)  # fmt: skip
def test_imported_generator_gives_the_published_images(tmp_path, source, state, forward, expect):
    f = tmp_path / "latest_net_netG.pth"
    torch.save(state, f)
    ckpt_path = import_checkpoint(source, f, tmp_path / "run")
    generator, ckpt = load_generator(tmp_path / "run")
    assert {k: ckpt["config"]["model"][k] for k in expect} == expect
    b = batch()
    with torch.no_grad():
        ours = generator(b)["image"]
    ref = published_output(forward, {k.removeprefix("module."): v for k, v in state.items()}, b)
    assert ours.shape == ref.shape == (2, 3, 128, 64)
    assert ref.std() > 0.02 and (ours - ref).abs().max() < 1e-5
    record = json.loads((tmp_path / "run" / "import.json").read_text())
    assert (
        record["source"] == source and record["sha256"] == file_sha256(f) and record["tensors"] == len(state)
    )
    assert ckpt["imported_from"]["sha256"] == record["sha256"] and ckpt_path.name == "latest.pt"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_root(tmp_path_factory.mktemp("imp") / "market")


def test_generate_and_augment_accept_an_imported_run(tmp_path, root, run_cli):
    torch.save(patn_state(ngf=4, n_blocks=1), tmp_path / "g.pth")
    code, out, err = run_cli("import-checkpoint", "--from", "pose-transfer", tmp_path / "g.pth", "--method", "patn",
                             "--out", tmp_path / "run")  # fmt: skip
    assert code == 0, err
    pairs = make_pairs(read_annotations(root / "annotations" / "train.csv")).head(3)
    write_pairs(tmp_path / "pairs.csv", pairs)
    code, _, err = run_cli("generate", "--checkpoint", tmp_path / "run", "--pairs", tmp_path / "pairs.csv",
                           "--data", root, "--out", tmp_path / "gen", "--no-progress", "--set", "num_workers=0")  # fmt: skip
    assert code == 0, err
    assert len(list((tmp_path / "gen").glob("*.jpg"))) == 3
    r = augment(root, tmp_path / "aug", tmp_path / "run", AugmentConfig(portion=0.5), device="cpu",
                show_progress=False)  # fmt: skip
    assert r.generated == r.removed > 0
    code, _, err = run_cli("train", "--method", "patn", "--data", root, "--out", tmp_path / "run", "--resume")
    assert code == 2 and "imported weights" in err and "\n" not in err.strip()


def test_refusals_name_the_first_mismatch(tmp_path, run_cli):
    def refused(state, *args):
        torch.save(state, tmp_path / "g.pth")
        code, _, err = run_cli("import-checkpoint", "--from", "pose-transfer", tmp_path / "g.pth",
                               "--out", tmp_path / "run", *args)  # fmt: skip
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "run").exists()
        return err.strip().removeprefix("reidaug: error: ")

    good = patn_state(ngf=4, n_blocks=1)
    bad = dict(good)
    bad["model.att.0.conv_block_stream1.1.weight"] = torch.zeros(16, 16, 5, 5)
    assert refused(bad) == (f"{tmp_path / 'g.pth'}: 'model.att.0.conv_block_stream1.1.weight' has shape "
                            "(16, 16, 5, 5), reidaug's 'blocks.0.conv_p.1.weight' expects (16, 16, 3, 3)")  # fmt: skip
    assert "key 'model.extra.weight' has no counterpart in reidaug's patn generator" in refused(
        {**good, "model.extra.weight": torch.zeros(1)})  # fmt: skip
    missing = {k: v for k, v in good.items() if k != "model.stream1_up.7.bias"}
    assert refused(missing).endswith("no weights for reidaug's 'decoder.7.bias' (the file lacks them)")
    assert refused(good, "--method", "xinggan") == "--from pose-transfer holds a patn generator, not xinggan"
    assert "not a Pose-Transfer PATN generator" in refused({"conv.weight": torch.zeros(1)})
    assert "not a state dict" in refused([1, 2])

    class Payload:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"w": Payload()}, tmp_path / "g.pth", _use_new_zipfile_serialization=True)
    code, out, err = run_cli("import-checkpoint", "--from", "pose-transfer", tmp_path / "g.pth", "--out",
                             tmp_path / "run")  # fmt: skip
    assert (
        code == 2
        and "needs more than weights to load (it pickles print): refused, nothing in it was executed" in err
    )
    assert "executed" not in out
    (tmp_path / "g.pth").write_bytes(np.random.default_rng(0).bytes(300))
    code, _, err = run_cli("import-checkpoint", "--from", "pose-transfer", tmp_path / "g.pth", "--out",
                           tmp_path / "run")  # fmt: skip
    assert code == 2 and err.strip().endswith(f"cannot read state dict {tmp_path / 'g.pth'}: not a PyTorch file")
    assert "weights_only" not in err
    code, _, err = run_cli(
        "import-checkpoint", "--from", "nope", tmp_path / "g.pth", "--out", tmp_path / "run"
    )
    assert code == 2 and "unknown checkpoint source 'nope'; choose from pose-transfer, xinggan" in err


def test_checkpoint_records_no_training_state(tmp_path):
    torch.save(patn_state(ngf=4, n_blocks=1), tmp_path / "g.pth")
    ckpt = load_checkpoint(import_checkpoint("pose-transfer", tmp_path / "g.pth", tmp_path / "run"))
    assert ckpt["inference"] == "generator" and ckpt["data"] is None and "optimizers" not in ckpt
    with pytest.raises(ReidaugError, match="is not empty"):
        import_checkpoint("pose-transfer", tmp_path / "g.pth", tmp_path / "run")
    import_checkpoint("pose-transfer", tmp_path / "g.pth", tmp_path / "run", overwrite=True)
