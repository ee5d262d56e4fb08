"""A study on a small disk: DVC's cache linking its files into the workspace instead of copying them.

README advises `dvc config cache.type hardlink,symlink` for large studies, which is safe only if no
stage ever writes into an existing output (that would write into the cache too). Real DVC, real
stages: the prepared arrays and the weights come out as hardlinks, and reruns replace them cleanly.
"""

import hashlib

from helpers.study_repo import dvc, make_study_repo, ran, set_params, stale

TRAIN = "train@tiny_cnn-16-0"


def _corrupt_cache_objects(repo):
    """Cache objects whose content no longer hashes to their name (files/md5/ab/cdef..., `.dir` lists too)."""
    objects = [path for path in (repo / ".dvc/cache/files/md5").rglob("*") if path.is_file()]
    assert objects
    return [path for path in objects
            if hashlib.md5(path.read_bytes()).hexdigest() != path.parent.name + path.name.removesuffix(".dir")]


def test_hardlinked_cache_survives_reruns(tmp_path):
    repo = make_study_repo(tmp_path / "study")
    set_params(repo, {"resolutions": [16]})
    dvc(repo, "config", "cache.type", "hardlink,symlink")
    assert ran(dvc(repo, "repro", TRAIN)) == {"prepare@16", TRAIN}
    images, weights = repo / "data/prepared/16/train/images.npy", repo / "models/tiny_cnn/16/0/model.pt"
    assert images.stat().st_nlink == 2 and weights.stat().st_nlink == 2, "workspace files are links into the cache"
    old_weights = weights.read_bytes()

    assert ran(dvc(repo, "repro", TRAIN)) == set()
    set_params(repo, {"train.lr": 0.01})
    assert ran(dvc(repo, "repro", TRAIN)) == {TRAIN}
    assert weights.stat().st_nlink == 2 and weights.read_bytes() != old_weights
    assert TRAIN not in stale(repo) and "prepare@16" not in stale(repo)
    assert _corrupt_cache_objects(repo) == [], "no stage wrote into a linked file"
