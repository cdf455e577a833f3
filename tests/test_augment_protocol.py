"""The portion-p protocol (PATN section 5): split sizes, identities kept, sources, target poses, seeds."""

import numpy as np
import pandas as pd
import pytest

from reidaug.augment.protocol import (
    FALLBACK_POSE,
    FALLBACK_SOURCE,
    plan_enlargement,
    plan_replacements,
    select_reduced,
)
from reidaug.data.keypoints import Annotations
from reidaug.errors import ReidaugError


def _train(n_ids=20, per_id=10, seed=0):
    rng = np.random.default_rng(seed)
    names, pids, cams, coords = [], [], [], []
    for pid in range(1, n_ids + 1):
        for k in range(per_id):
            cam = int(rng.integers(1, 7))
            names.append(f"{pid:04d}_c{cam}s1_{k:06d}_00.jpg")
            pids.append(pid)
            cams.append(cam)
            coords.append(rng.integers(0, 60, size=(18, 2)))
    df = pd.DataFrame({"name": names, "pid": pids, "camid": cams})
    return df, Annotations(names, np.array(coords))


@pytest.mark.parametrize("portion", [0.1, 0.3, 0.5, 0.9, 1.0])
def test_reduced_size_and_every_identity_kept(portion):
    train, _ = _train()
    kept = select_reduced(train, portion, seed=3)
    assert kept.sum() == max(round(portion * len(train)), train.pid.nunique())
    assert set(train.pid[kept]) == set(train.pid)


def test_tiny_portion_keeps_exactly_one_per_identity():
    train, _ = _train(n_ids=30, per_id=4)
    kept = select_reduced(train, 0.01, seed=0)
    assert (train[kept].groupby("pid").size() == 1).all()


def test_split_is_seeded():
    train, _ = _train()
    a, b, c = (select_reduced(train, 0.3, s) for s in (7, 7, 8))
    assert (a == b).all() and not (a == c).all()


def test_bad_portion():
    train, _ = _train()
    with pytest.raises(ReidaugError, match="portion"):
        select_reduced(train, 0.0, 0)


def test_replacement_jobs_follow_the_protocol():
    train, ann = _train()
    kept = select_reduced(train, 0.3, seed=1)
    jobs = plan_replacements(train, kept, ann, seed=1)
    kept_names = set(train.name[kept])
    removed = train[~kept]
    # one job per removed image, in the removed image's pose, from a kept image of the same identity
    assert len(jobs) == len(removed) == len(train) - kept.sum()
    assert list(jobs.replaces) == list(removed.name)
    assert (jobs.target_pose_from == jobs.replaces).all()
    assert set(jobs.source) <= kept_names
    pid_of = dict(zip(train.name, train.pid))
    assert all(pid_of[s] == p for s, p in zip(jobs.source, jobs.pid))
    assert not (set(jobs.source) & set(removed.name))
    assert (jobs.fallback == "").all()


def test_random_pose_variant_draws_from_kept_set():
    train, ann = _train()
    kept = select_reduced(train, 0.3, seed=1)
    jobs = plan_replacements(train, kept, ann, seed=1, pose_source="random")
    assert set(jobs.target_pose_from) <= set(train.name[kept])


def test_no_joint_fallbacks_are_flagged():
    train, ann = _train(n_ids=2, per_id=5)
    kept = np.array([True, False, False, False, False] * 2)
    coords = ann.coords.copy()
    coords[1] = -1  # removed image without any joint -> pose of a kept image of the same identity
    coords[5] = -1  # the only kept image of identity 2 has no joint -> source fallback
    jobs = plan_replacements(train, kept, Annotations(ann.names, coords), seed=0).set_index("replaces")
    assert jobs.loc[train.name[1], "fallback"] == FALLBACK_POSE
    assert jobs.loc[train.name[1], "target_pose_from"] == train.name[0]
    assert (jobs.loc[train.name[6:10], "fallback"] == FALLBACK_SOURCE).all()
    assert (jobs.loc[train.name[6:10], "source"] == train.name[5]).all()


def test_missing_keypoints_is_an_error():
    train, ann = _train(n_ids=2, per_id=3)
    with pytest.raises(ReidaugError, match="no keypoints row"):
        plan_replacements(train, np.ones(6, bool), ann.subset(ann.names[:-1]), seed=0)


@pytest.mark.parametrize("ratio", [2, 3])
def test_enlargement_adds_ratio_minus_one_per_image(ratio):
    train, ann = _train(n_ids=5, per_id=4)
    jobs = plan_enlargement(train, ann, ratio, seed=0)
    assert len(jobs) == (ratio - 1) * len(train)
    assert (jobs.source.value_counts() == ratio - 1).all()
    assert set(jobs.target_pose_from) <= set(train.name)
