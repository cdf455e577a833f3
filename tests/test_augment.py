"""`reidaug augment` end to end on a tiny synthetic root with a tiny PATN: the protocol of PATN section 5."""

from __future__ import annotations

import os

import pandas as pd
import pytest
from tiny_market import TINY_PATN

from reidaug.augment.build import AugmentConfig, augment, check_leakage
from reidaug.config import load_config
from reidaug.data.keypoints import read_annotations
from reidaug.data.market import read_split
from reidaug.data.synth.config import SynthConfig
from reidaug.data.synth.dataset import make_dataset
from reidaug.errors import ReidaugError
from reidaug.train.config import load_method_config
from reidaug.train.trainer import train

SYNTH = ["synth.train_ids=6", "synth.test_ids=4", "synth.images_per_id=[4,6]", "synth.test_images_per_id=[4,6]",
         "synth.cameras_per_id=[2,3]", "synth.distractors=2", "synth.junk=2"]  # fmt: skip


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "market"
    make_dataset(out, load_config(SynthConfig, "synth/default", SYNTH), show_progress=False)
    return out


@pytest.fixture(scope="module")
def checkpoint(root, tmp_path_factory):
    cfg = load_method_config("patn", None, [*TINY_PATN, "train.iterations=2"])
    return train(cfg, root, tmp_path_factory.mktemp("run"), show_progress=False).checkpoint


def _cfg(**kw):
    base = {"portion": 0.3, "seed": 0, "generate": {"batch_size": 8, "num_workers": 0, "writer_threads": 2}}
    return load_config(AugmentConfig, None, [f"{k}={v}" for k, v in {**base, **kw}.items()
                                             if k != "generate"] + ["generate.batch_size=8",
                                                                    "generate.num_workers=0"])  # fmt: skip


@pytest.fixture(scope="module")
def built(root, checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("aug") / "p03"
    return augment(root, out, checkpoint, _cfg(), device="cpu", show_progress=False)


def test_protocol_holds(root, built):
    train = read_split(root, "train")
    reduced = read_split(built.reduced_root, "train")
    augmented = read_split(built.augmented_root, "train")
    jobs = pd.read_csv(built.out / "jobs.csv", keep_default_na=False)
    kept = set(reduced.name)
    removed = set(train.name) - kept
    # sizes: |M_p^R| = round(p |M|) (at least one per identity), |M_p^A| = |M|
    assert len(reduced) == max(round(0.3 * len(train)), train.pid.nunique()) == built.kept
    assert len(augmented) == len(train)
    assert set(reduced.pid) == set(train.pid)  # every identity kept
    # one job per removed image: same identity, a kept source, the removed image's own pose
    assert sorted(jobs.replaces) == sorted(removed) and len(jobs) == built.generated
    pid = dict(zip(train.name, train.pid))
    assert all(pid[s] == p == pid[r] for s, p, r in zip(jobs.source, jobs.pid, jobs.replaces))
    assert set(jobs.source) <= kept
    assert (jobs.target_pose_from == jobs.replaces).all()
    # no removed real image in the augmented set; generated images carry the identity's pid
    assert not (set(augmented.name) & removed)
    gen = augmented[~augmented.name.isin(kept)]
    assert len(gen) == len(removed) and (gen.sequence == 0).all()
    assert sorted(gen.pid) == sorted(pid[r] for r in removed)


def test_links_not_copies(root, built):
    for sub in ("reduced", "augmented"):
        for folder in ("bounding_box_test", "query"):
            link = built.out / sub / folder
            assert link.is_symlink() and link.resolve() == (root / folder).resolve()
    train_dir = built.reduced_root / "bounding_box_train"
    assert all((train_dir / n).is_symlink() for n in os.listdir(train_dir))
    manifest = pd.read_csv(built.out / "generated" / "manifest.csv")
    assert len(manifest) == built.generated and set(manifest.method) == {"patn"}


def test_same_seed_same_split_and_rerun_is_idempotent(root, checkpoint, built, tmp_path):
    again = augment(root, built.out, checkpoint, _cfg(), device="cpu", show_progress=False)
    assert again.kept == built.kept
    other = augment(root, tmp_path / "s1", checkpoint, _cfg(seed=1), device="cpu", show_progress=False)
    a = set(read_split(built.reduced_root, "train").name)
    b = set(read_split(other.reduced_root, "train").name)
    assert a != b


def test_other_settings_in_same_folder_refused(root, checkpoint, built):
    with pytest.raises(ReidaugError, match="other settings"):
        augment(root, built.out, checkpoint, _cfg(portion=0.5), device="cpu", show_progress=False)


def test_interrupted_generation_resumes(root, checkpoint, tmp_path):
    class Stop(Exception):
        pass

    def stop(k):
        raise Stop

    out = tmp_path / "int"
    with pytest.raises(Stop):
        augment(root, out, checkpoint, _cfg(), device="cpu", show_progress=False, on_batch=stop)
    assert not (out / "augmented").exists()
    r = augment(root, out, checkpoint, _cfg(), device="cpu", show_progress=False)
    assert len(read_split(r.augmented_root, "train")) == len(read_split(root, "train"))
    assert not list((out / "generated").glob("*.tmp"))


def test_enlargement_ratio(root, checkpoint, tmp_path):
    r = augment(root, tmp_path / "x2", checkpoint, _cfg(portion=1.0, ratio=2), device="cpu", show_progress=False)
    n = len(read_split(root, "train"))
    assert r.generated == n and len(read_split(r.augmented_root, "train")) == 2 * n


def test_leakage_check():
    with pytest.raises(ReidaugError, match="outside the reduced set"):
        check_leakage({"data": {"images": ["a.jpg", "b.jpg"]}}, {"a.jpg"}, "reduced")
    with pytest.raises(ReidaugError, match="records its training images"):
        check_leakage({}, {"a.jpg"}, "reduced")
    check_leakage({}, {"a.jpg"}, "full")


def test_leakage_free_mode_trains_on_reduced_pairs(root, tmp_path):
    r = augment(root, tmp_path / "lf", None, _cfg(generator_trained_on="reduced"), device="cpu",
                show_progress=False, method_overrides=[*TINY_PATN, "train.iterations=1"])  # fmt: skip
    from reidaug.models.checkpoint import load_checkpoint

    seen = set(load_checkpoint(tmp_path / "lf" / "generator" / "checkpoints" / "latest.pt")["data"]["images"])
    assert seen <= set(read_split(r.reduced_root, "train").name)


def test_cli_errors(root, run_cli, tmp_path):
    code, _, err = run_cli("augment", "--data", root, "--out", tmp_path / "o", "--portion", "0.3")
    assert code == 2 and "--checkpoint is required" in err and "Traceback" not in err
    code, _, err = run_cli("augment", "--data", root, "--out", tmp_path / "o", "--portion", "1.5")
    assert code == 2 and "portion" in err
    assert not (tmp_path / "o").exists()
    ann = read_annotations(root / "annotations" / "train.csv")
    assert len(ann) == len(read_split(root, "train"))


def test_torchreid_reads_reduced_and_augmented_roots(root, built):
    """torchreid's own Market1501 class and our registered dataset both read the roots augment writes."""
    from reidaug.reid._torchreid import reid
    from reidaug.reid.dataset import NAME, register, torchreid_market1501

    register()
    for sub, n_train in (("reduced", built.kept), ("augmented", built.kept + built.generated)):
        own = torchreid_market1501(built.out / sub)
        ours = reid.data.datasets.init_image_dataset(NAME, root=str(built.out / sub), mode="train", split_id=0)
        assert len(own.train) == len(ours.train) == n_train
        assert own.num_train_pids == ours.num_train_pids == read_split(root, "train").pid.nunique()
        assert len(own.query) == len(read_split(root, "query"))


@pytest.mark.parametrize("form", ["link", "copy", "hardlink"])
def test_roots_survive_moving_the_output_in_every_form(root, checkpoint, tmp_path, form):
    """Relative links inside OUT (absolute to the real dataset), or real files: after moving OUT elsewhere,
    torchreid's Market1501, our registered dataset (what reid-eval reads) and every image still read."""
    from reidaug.data.images import read_image
    from reidaug.reid._torchreid import reid
    from reidaug.reid.dataset import NAME, register, torchreid_market1501

    r = augment(root, tmp_path / "a" / "out", checkpoint, _cfg(), device="cpu", show_progress=False,
                materialize=form)  # fmt: skip
    aug_train = r.augmented_root / "bounding_box_train"
    generated = sorted(pd.read_csv(r.out / "jobs.csv").out_name)
    real = sorted(set(os.listdir(aug_train)) - set(generated))
    if form == "link":
        assert all(os.readlink(aug_train / n) == f"../../generated/{n}" for n in generated)
        assert all(os.path.isabs(os.readlink(aug_train / n)) for n in real)
        assert os.path.isabs(os.readlink(r.augmented_root / "query"))
    else:
        entries = [*aug_train.iterdir(), *(r.augmented_root / "query").iterdir(), r.augmented_root / "query"]
        assert not any(p.is_symlink() for p in entries)
        same = os.path.samefile(aug_train / real[0], root / "bounding_box_train" / real[0])
        assert same == (form == "hardlink")
    moved = tmp_path / "b" / "moved"
    moved.parent.mkdir()
    os.rename(r.out, moved)
    register()
    for sub, n_train in (("reduced", r.kept), ("augmented", r.kept + r.generated)):
        own = torchreid_market1501(moved / sub)
        ours = reid.data.datasets.init_image_dataset(NAME, root=str(moved / sub), mode="train", split_id=0)
        assert len(own.train) == len(ours.train) == n_train
        assert len(ours.query) == len(read_split(root, "query")) and len(ours.gallery) > 0
        for path, *_ in ours.train + ours.query:
            assert read_image(path).shape == (128, 64, 3)
    # a rerun in the moved place (same settings) completes nothing new and keeps the roots valid
    again = augment(root, moved, checkpoint, _cfg(), device="cpu", show_progress=False, materialize=form)
    assert (again.kept, again.generated) == (r.kept, r.generated)
    assert all(read_image(moved / "augmented" / "bounding_box_train" / n).shape == (128, 64, 3) for n in generated)


def test_materialize_converts_in_place_and_refuses_unknown_forms(root, checkpoint, tmp_path):
    out = tmp_path / "out"
    augment(root, out, checkpoint, _cfg(), device="cpu", show_progress=False)
    assert (out / "reduced" / "query").is_symlink()
    augment(root, out, checkpoint, _cfg(), device="cpu", show_progress=False, materialize="copy")
    assert not (out / "reduced" / "query").is_symlink() and (out / "reduced" / "query").is_dir()
    train_dir = out / "reduced" / "bounding_box_train"
    assert not any(p.is_symlink() for p in train_dir.iterdir())
    augment(root, out, checkpoint, _cfg(), device="cpu", show_progress=False)
    assert (out / "reduced" / "query").is_symlink() and all(p.is_symlink() for p in train_dir.iterdir())
    with pytest.raises(ReidaugError, match="--materialize must be one of link, copy, hardlink, got 'zip'"):
        augment(root, tmp_path / "o2", checkpoint, _cfg(), device="cpu", show_progress=False, materialize="zip")
    assert not (tmp_path / "o2").exists()
