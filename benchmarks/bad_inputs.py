"""The bad-input matrix: every command of the CLI given input it must refuse, counted by how it refused.

Each case runs `reidaug.cli.main` in this process (tiny synthetic fixtures, built first with the CLI itself) and
is classed as
  clean      exit code 2, one line `reidaug: error: ...` on stderr, no traceback, and nothing left behind (the
             case's folder holds what it held before: no half-written output);
  traceback  an exception escaped the command boundary, or a traceback was printed;
  accepted   exit code 0: the bad input went through silently;
  unclean    anything else (several lines, another exit code, a half-written output);
  skipped    the machine cannot build the condition (a read-only or full filesystem needs `mount`).
Prints JSON: {cases, clean, tracebacks, silent_acceptances, unclean, skipped, seconds, non_clean: [...]}.
Exit status 1 when a case is not clean.

  python benchmarks/bad_inputs.py [--only TEXT] [--list] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

TIMEOUT_S = 120  # per case: a silently accepted input must not start a long job (every config here is tiny)

SYNTH = ["synth.train_ids=6", "synth.test_ids=5", "synth.images_per_id=[3,5]", "synth.test_images_per_id=[4,8]",
         "synth.cameras_per_id=[2,3]", "synth.distractors=4", "synth.junk=3"]  # fmt: skip
TRAIN = ["model.ngf=4", "model.n_blocks=1", "model.discriminator.ndf=4", "model.discriminator.n_blocks=1",
         "loss.vgg_weights=none", "loss.lambda_perceptual=0", "loss.pool_size=4", "train.batch_size=2",
         "train.num_workers=0", "train.tensorboard=false", "train.sample_count=2", "train.log_every=1",
         "train.checkpoint_every=1000", "train.sample_every=0", "train.iterations=2"]  # fmt: skip
REID = ["height=32", "width=16", "batch_size=8", "epochs=1", "stepsize=[5]", "workers=0", "eval_batch_size=64",
        "threads=1"]  # fmt: skip


def sets(values) -> list[str]:
    return [a for v in values for a in ("--set", v)]


# -- fixtures ---------------------------------------------------------------------------------------------------


class Fixtures:
    """Shared, read-only inputs, built on first use with the CLI: a tiny synthetic root, its pairs, a 2-iteration
    PATN run, a generate output, an augment output."""

    def __init__(self, base: Path):
        self.base = base
        self._built: dict[str, Path] = {}

    def _once(self, name: str, argv: list, path: Path) -> Path:
        if name not in self._built:
            from reidaug.cli import main

            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
                code = main([str(a) for a in argv])
            if code != 0:
                raise SystemExit(f"bad_inputs: fixture {name} failed: {err.getvalue().strip()}")
            self._built[name] = path
        return self._built[name]

    @property
    def root(self) -> Path:
        p = self.base / "root"
        return self._once("root", ["synth", "--out", p, "-q", *sets(SYNTH)], p)

    @property
    def ann(self) -> Path:
        return self.root / "annotations" / "train.csv"

    @property
    def pairs(self) -> Path:
        p = self.base / "pairs.csv"
        return self._once("pairs", ["pairs", "-a", self.ann, "-o", p], p)

    @property
    def run(self) -> Path:
        p = self.base / "run"
        return self._once("run", ["train", "--method", "patn", "--data", self.root, "--pairs", self.pairs, "--out", p,
                                  "--device", "cpu", "--no-progress", *sets(TRAIN)], p)  # fmt: skip

    @property
    def ckpt(self) -> Path:
        return self.run / "checkpoints" / "latest.pt"

    @property
    def gen(self) -> Path:
        p = self.base / "gen"
        return self._once("gen", ["generate", "--checkpoint", self.run, "--pairs", self.pairs, "--data", self.root,
                                  "--out", p, "--device", "cpu", "--no-progress", "--set", "num_workers=0"], p)  # fmt: skip


# -- one case's surroundings ------------------------------------------------------------------------------------


class Skip(Exception):
    """The machine cannot build this case's condition."""


class CaseTimeout(BaseException):
    pass


class Ctx:
    """A case's own folder `d` (outputs go there), the shared fixtures `F`, and helpers that build bad inputs."""

    def __init__(self, d: Path, fixtures: Fixtures):
        self.d, self.F = d, fixtures
        self._cleanup: list[Callable[[], None]] = []

    def file(self, name: str, content: str | bytes) -> Path:
        p = self.d / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(content if isinstance(content, bytes) else content.encode())
        return p

    def below_file(self, name: str = "sub") -> Path:
        """A path whose parent is a file: `FILE/name`."""
        f = self.file("a-file", "not a folder\n")
        return f / name

    def root_copy(self) -> Path:
        dst = self.d / "root"
        if not dst.exists():
            shutil.copytree(self.F.root, dst)
        return dst

    def mount(self, name: str, options: str) -> Path:
        p = self.d / name
        p.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(p)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"mount -t tmpfs not permitted ({(r.stderr or r.stdout).strip()[:80]})")
        self._cleanup.append(lambda: subprocess.run(["umount", "-l", str(p)], capture_output=True))
        return p

    def read_only(self, name: str = "ro") -> Path:
        return self.mount(name, "ro,size=64k")

    def full(self, name: str = "full", size: str = "1m", fill: bool = True) -> Path:
        """A tmpfs of `size`, filled up to its last few kilobytes (`fill`)."""
        p = self.mount(name, f"size={size}")
        if fill:
            with open(p / ".ballast", "wb") as f, contextlib.suppress(OSError):
                f.write(b"\0" * (1 << 20) * 64)
            self._cleanup.insert(0, lambda: (p / ".ballast").unlink(missing_ok=True))
        return p

    def immutable(self, name: str = "immutable") -> Path:
        """A folder nobody (root included) may add to: `chattr +i`."""
        p = self.d / name
        p.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["chattr", "+i", str(p)], capture_output=True, text=True)
        if r.returncode != 0:
            raise Skip(f"chattr +i not permitted ({(r.stderr or r.stdout).strip()[:80]})")
        self._cleanup.insert(0, lambda: subprocess.run(["chattr", "-i", str(p)], capture_output=True))
        return p

    def close(self) -> None:
        for f in self._cleanup:
            f()
        self._cleanup.clear()


# -- cases ------------------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    argv: Callable[[Ctx], list]
    changes_ok: bool = False  # a refusal here may leave files by design (said in `why`)
    why: str = ""


CASES: list[Case] = []


def add(name: str, argv: Callable[[Ctx], list], **kw) -> None:
    CASES.append(Case(name, argv, **kw))


def allow(name: str, why: str) -> None:
    """Case `name` may leave files behind by design (`why`)."""
    case = next(c for c in CASES if c.name == name)
    case.changes_ok, case.why = True, why


def ann_text(rows: list[tuple[str, list[int], list[int]]]) -> str:
    return "name:keypoints_y:keypoints_x\n" + "".join(f"{n}: {ys}: {xs}\n" for n, ys, xs in rows)


def ann_edit(c: Ctx, edit: Callable[[list[str]], list[str]], name: str = "ann.csv") -> Path:
    """A copy of the fixture root's train annotations with its lines edited."""
    lines = c.F.ann.read_text().splitlines()
    return c.file(name, "\n".join(edit(lines)) + "\n")


def row_with(line: str, joint: int, y: int | str) -> str:
    name, ys, xs = line.split(":")
    vals = json.loads(ys)
    vals[joint] = "Y"
    return f"{name}: {json.dumps(vals).replace(chr(34) + 'Y' + chr(34), str(y))}:{xs}"


BINARY = b"\xff\xfe\x00\x81garbage\x9c\xff\n" * 8
PICKLE_CODE = b"\x80\x02cposix\nsystem\nq\x00X\n\x00\x00\x00echo pwnedq\x01\x85q\x02Rq\x03."  # calls os.system


def torch_file(c: Ctx, name: str, obj) -> Path:
    import torch

    p = c.d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, p)
    return p


def torn(c: Ctx, src: Path, name: str) -> Path:
    data = src.read_bytes()
    return c.file(name, data[: len(data) // 3])


def market_cam0(c: Ctx) -> Path:
    """A copy of the root with one training image renamed to camera 0 (annotations follow)."""
    root = c.root_copy()
    train = sorted((root / "bounding_box_train").iterdir())[0]
    bad = train.name.replace(train.name[5:7], "c0", 1)
    train.rename(train.with_name(bad))
    ann = root / "annotations" / "train.csv"
    ann.write_text(ann.read_text().replace(train.name, bad))
    return root


def root_bad_image(c: Ctx, kind: str = "corrupt") -> Path:
    """A copy of the root whose training images are not JPEGs (or have the wrong size): whichever a command
    reads first is bad."""
    import numpy as np

    from reidaug.data.images import write_image

    root = c.root_copy()
    for img in sorted((root / "bounding_box_train").iterdir()):
        if kind == "corrupt":
            img.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
        else:
            write_image(img, np.zeros((100, 50, 3), np.uint8))
    return root


def os_cases(cmd: str, argv: Callable[[Ctx, Path], list], kind: str, full_size: str = "1m",
             skip=()) -> None:  # fmt: skip
    """The operating-system failure classes of an output path: a folder where a file goes (or the reverse), a
    path below a file, a read-only filesystem, a full disk, an immutable folder."""
    ext = {"json": ".json", "csv": ".csv", "png": ".png", "html": ".html", "dir": ""}[kind]
    name = "out" + ext
    if "wrong-type" not in skip:
        if kind == "dir":
            add(f"{cmd}: --out is a file", lambda c: argv(c, c.file(name, "a file\n")))
        else:
            add(f"{cmd}: --out is a folder", lambda c: argv(c, (c.d / name).mkdir() or c.d / name))
    add(f"{cmd}: --out below a file", lambda c: argv(c, c.below_file(name)))
    add(f"{cmd}: --out on a read-only filesystem", lambda c: argv(c, c.read_only() / name))
    if "full" not in skip:
        add(f"{cmd}: --out on a full disk", lambda c: argv(c, c.full(size=full_size) / name))
    add(f"{cmd}: --out in an immutable folder", lambda c: argv(c, c.immutable() / name))


# global
add("cli: unknown command", lambda c: ["frobnicate"])
add("cli: unknown option", lambda c: ["pairs", "--frobnicate"])
add("cli: --set without =", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--set", "cap_per_identity"])
add("cli: --set unknown key", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--set", "nope=1"])
add("cli: --config missing", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--config", c.d / "no.yaml"])
add("cli: --config not UTF-8", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--config",
                                          c.file("bin.yaml", BINARY)])  # fmt: skip
add("cli: --config not YAML", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--config",
                                         c.file("bad.yaml", "a: [1, 2\nb: }\n")])  # fmt: skip
add("cli: --config a YAML list", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--config",
                                            c.file("list.yaml", "- 1\n- 2\n")])  # fmt: skip
add("cli: --config a folder", lambda c: ["pairs", "-a", c.F.ann, "-o", c.d / "p.csv", "--config",
                                         (c.d / "x.yaml").mkdir() or c.d / "x.yaml"])  # fmt: skip

# synth
S = lambda c, *a: ["synth", "-q", *sets(SYNTH), *a]  # noqa: E731
add("synth: nothing to do", lambda c: ["synth"])
add("synth: --preview not an image name", lambda c: S(c, "--preview", c.d / "grid.txt"))
add("synth: --preview is a folder", lambda c: S(c, "--preview", (c.d / "g.png").mkdir() or c.d / "g.png"))
add("synth: --preview exists", lambda c: S(c, "--preview", c.file("g.png", "x")))
add("synth: --out non-empty folder", lambda c: S(c, "--out", c.file("o/x.txt", "x").parent))
add("synth: negative identities", lambda c: S(c, "--out", c.d / "o", "--set", "synth.train_ids=-1"))
add("synth: identities beyond pid_max", lambda c: S(c, "--out", c.d / "o", "--set", "synth.train_ids=1500"))
add("synth: range min > max", lambda c: S(c, "--out", c.d / "o", "--set", "synth.images_per_id=[5,2]"))
add("synth: seed not a number", lambda c: S(c, "--out", c.d / "o", "--set", "synth.seed=abc"))
add("synth: --seed not a number", lambda c: S(c, "--out", c.d / "o", "--seed", "abc"))
add("synth: negative seed", lambda c: S(c, "--out", c.d / "o", "--seed", "-1"))
add("synth: --workers 0", lambda c: S(c, "--out", c.d / "o", "--workers", "0"))
add("synth: unknown camera table key", lambda c: S(c, "--out", c.d / "o", "--set", "cameras.c9.jpeg=[1,2]"))
add("synth: extension not an image", lambda c: S(c, "--out", c.d / "o", "--set", "synth.ext=gif"))
add("synth: seven cameras", lambda c: S(c, "--out", c.d / "o", "--set", "synth.num_cameras=7"))
add("synth: no cameras", lambda c: S(c, "--out", c.d / "o", "--set", "synth.num_cameras=0"))
os_cases("synth", lambda c, o: S(c, "--out", o), "dir", full_size="64k")
os_cases("synth --preview", lambda c, o: S(c, "--preview", o), "png", full_size="16k", skip=("wrong-type",))

# poses (the importers: no model weights needed)
P = lambda c, *a: ["poses", "-q", "-i", c.F.root, "-o", c.d / "ann.csv", *a]  # noqa: E731
add("poses: no --images", lambda c: ["poses", "-o", c.d / "a.csv"])
add("poses: --images missing", lambda c: ["poses", "-i", c.d / "nope", "-o", c.d / "a.csv", "-b", "coco-json",
                                          "--json", c.file("c.json", "[]")])  # fmt: skip
add("poses: --images a file", lambda c: ["poses", "-i", c.file("f.jpg", "x"), "-o", c.d / "a.csv", "-b",
                                         "coco-json", "--json", c.file("c.json", "[]")])  # fmt: skip
add("poses: --images without images", lambda c: ["poses", "-i", (c.d / "e").mkdir() or c.d / "e", "-o",
                                                 c.d / "a.csv", "-b", "coco-json", "--json", c.file("c.json", "[]")])  # fmt: skip
add("poses: unknown backend", lambda c: P(c, "-b", "nope"))
add("poses: unknown split", lambda c: P(c, "-b", "coco-json", "--json", c.file("c.json", "[]"), "--split", "nope"))
add("poses: --batch-size 0", lambda c: P(c, "-b", "coco-json", "--json", c.file("c.json", "[]"), "--batch-size", "0"))
add("poses: coco-json without --json", lambda c: P(c, "-b", "coco-json"))
add("poses: coco-json file missing", lambda c: P(c, "-b", "coco-json", "--json", c.d / "none.json"))
add("poses: coco-json not UTF-8", lambda c: P(c, "-b", "coco-json", "--json", c.file("c.json", BINARY)))
add("poses: coco-json not JSON", lambda c: P(c, "-b", "coco-json", "--json", c.file("c.json", "[{oops")))
add("poses: coco-json an object", lambda c: P(c, "-b", "coco-json", "--json", c.file("c.json", '{"a": 1}')))
add("poses: coco-json wrong keypoint count", lambda c: P(c, "-b", "coco-json", "--json", c.file(
    "c.json", json.dumps([{"image_id": "0001_c1s1_000001_01.jpg", "keypoints": [1, 2, 3], "score": 1}]))))
add("poses: openpose-json folder missing", lambda c: P(c, "-b", "openpose-json", "--json", c.d / "nope"))
add("poses: keypointrcnn weights missing", lambda c: P(c, "-b", "keypointrcnn", "--weights", c.d / "w.pth",
                                                       "--device", "cpu"))  # fmt: skip
add("poses: keypointrcnn weights random bytes", lambda c: P(c, "-b", "keypointrcnn", "--device", "cpu", "--weights",
                                                            c.file("w.pth", os.urandom(4096))))  # fmt: skip
add("poses: unknown device", lambda c: P(c, "-b", "keypointrcnn", "--device", "tpu"))
add("poses: mediapipe models missing", lambda c: P(c, "-b", "mediapipe", "--models", c.d / "nope.whl"))
add("poses: --out exists, not UTF-8", lambda c: ["poses", "-q", "-i", c.F.root, "-o", c.file("ann.csv", BINARY),
                                                 "-b", "coco-json", "--json", c.file("c.json", "[]")])  # fmt: skip
add("poses: --out exists, another format", lambda c: ["poses", "-q", "-i", c.F.root, "-o", c.file("ann.csv", "a,b\n1,2\n"),
                                                      "-b", "coco-json", "--json", c.file("c.json", "[]")])  # fmt: skip
add("poses: --preview a folder", lambda c: P(c, "-b", "coco-json", "--json", c.file("c.json", "[]"), "--preview",
                                             (c.d / "p.png").mkdir() or c.d / "p.png"))  # fmt: skip
os_cases("poses", lambda c, o: ["poses", "-q", "-i", c.F.root, "-o", o, "-b", "coco-json", "--json",
                                c.file("c.json", "[]")], "csv", full_size="4k")  # fmt: skip
allow("poses: --out on a full disk", "the partial file of the rows extracted so far: the same command resumes")

# pairs
PA = lambda c, a, *x: ["pairs", "-a", a, "-o", c.d / "pairs.csv", *x]  # noqa: E731
add("pairs: annotations missing", lambda c: PA(c, c.d / "nope.csv"))
add("pairs: annotations a folder", lambda c: PA(c, (c.d / "a.csv").mkdir() or c.d / "a.csv"))
add("pairs: annotations not UTF-8", lambda c: PA(c, c.file("a.csv", BINARY)))
add("pairs: annotations empty", lambda c: PA(c, c.file("a.csv", "")))
add("pairs: annotations header only", lambda c: PA(c, c.file("a.csv", "name:keypoints_y:keypoints_x\n")))
add("pairs: annotations another header", lambda c: PA(c, c.file("a.csv", "name,y,x\n")))
add("pairs: row with two fields", lambda c: PA(c, ann_edit(c, lambda ls: [*ls, "0001_c1s1_000001_01.jpg: [1]"])))
add("pairs: keypoints not a list", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], ls[1].replace("[", "(", 1), *ls[2:]])))
add("pairs: 17 joints", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], ls[1].split(":")[0] + ": " + json.dumps([5] * 17)
                                                                      + ": " + json.dumps([5] * 18), *ls[2:]])))
add("pairs: float coordinate", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 0, "1.5"), *ls[2:]])))
add("pairs: coordinate -5", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 0, -5), *ls[2:]])))
add("pairs: coordinate 3000000000", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 0, 3000000000),
                                                                            *ls[2:]])))  # fmt: skip
add("pairs: coordinate beyond int64", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 0, 10**20),
                                                                              *ls[2:]])))  # fmt: skip
add("pairs: coordinate NaN", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 0, "NaN"), *ls[2:]])))
add("pairs: duplicate image", lambda c: PA(c, ann_edit(c, lambda ls: [*ls, ls[1]])))
add("pairs: empty image name", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], ":" + ls[1].split(":", 1)[1], *ls[2:]])))
add("pairs: camera 0 in a Market name", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], ls[1][:5] + "c0" + ls[1][7:],
                                                                                *ls[2:]])))  # fmt: skip
add("pairs: camera 7 in a Market name", lambda c: PA(c, ann_edit(c, lambda ls: [ls[0], ls[1][:5] + "c7" + ls[1][7:],
                                                                                *ls[2:]])))  # fmt: skip
add("pairs: no torso anywhere", lambda c: PA(c, c.file("a.csv", ann_text([(f"0001_c1s1_00000{i}_01.jpg", [-1] * 18,
                                                                           [-1] * 18) for i in range(3)]))))  # fmt: skip
add("pairs: --cap 0", lambda c: PA(c, c.F.ann, "--cap", "0"))
add("pairs: --cap -2", lambda c: PA(c, c.F.ann, "--cap", "-2"))
add("pairs: --sample 0", lambda c: PA(c, c.F.ann, "--sample", "0"))
add("pairs: --sample not a number", lambda c: PA(c, c.F.ann, "--sample", "many"))
add("pairs: --out exists", lambda c: ["pairs", "-a", c.F.ann, "-o", c.file("p.csv", "x\n")])
os_cases("pairs", lambda c, o: ["pairs", "-a", c.F.ann, "-o", o], "csv", full_size="4k")

# train
T = lambda c, *a, data=None: ["train", "--method", "patn", "--data", data or c.F.root, "--device", "cpu",  # noqa: E731
                              "--no-progress", *sets(TRAIN), *a]  # fmt: skip
TO = lambda c, *a, data=None: T(c, "--out", c.d / "run", *a, data=data)  # noqa: E731
add("train: unknown method", lambda c: ["train", "--method", "nope", "--data", c.F.root, "--out", c.d / "r"])
add("train: --data missing", lambda c: TO(c, data=c.d / "nope"))
add("train: --data a file", lambda c: TO(c, data=c.file("f", "x")))
add("train: --data without bounding_box_train", lambda c: TO(c, data=(c.d / "empty").mkdir() or c.d / "empty"))
add("train: --pairs missing", lambda c: TO(c, "--pairs", c.d / "nope.csv"))
add("train: --pairs not UTF-8", lambda c: TO(c, "--pairs", c.file("p.csv", BINARY)))
add("train: --pairs another header", lambda c: TO(c, "--pairs", c.file("p.csv", "a,b\nx,y\n")))
add("train: --pairs header only", lambda c: TO(c, "--pairs", c.file("p.csv", "from,to\n")))
add("train: --pairs duplicate rows", lambda c: TO(c, "--pairs", c.file("p.csv", c.F.pairs.read_text() + c.F.pairs.read_text().splitlines()[1] + "\n")))
add("train: --pairs unknown images", lambda c: TO(c, "--pairs", c.file("p.csv", "from,to\n0001_c1s1_000001_01.jpg,0001_c1s1_000002_01.jpg\n")))
add("train: --pairs a row missing a name", lambda c: TO(c, "--pairs", c.file("p.csv", c.F.pairs.read_text() + "0001_c1s1_000001_01.jpg,\n")))
add("train: --pairs with ragged rows", lambda c: TO(c, "--pairs", c.file("p.csv", c.F.pairs.read_text() + "a,b,c,d\n")))
add("train: --pairs of two identities", lambda c: TO(c, "--pairs", c.file("p.csv", "from,to\n" + ",".join(
    [ln.split(":")[0] for ln in c.F.ann.read_text().splitlines()[1:]][::-1][:1]
    + [ln.split(":")[0] for ln in c.F.ann.read_text().splitlines()[1:]][:1]) + "\n")))
add("train: --annotations missing", lambda c: TO(c, "--annotations", c.d / "nope.csv"))
add("train: --annotations not UTF-8", lambda c: TO(c, "--annotations", c.file("a.csv", BINARY)))
add("train: keypoint outside the image (y = 500)", lambda c: TO(c, "--annotations", ann_edit(
    c, lambda ls: [ls[0], *(row_with(ln, 2, 500) for ln in ls[1:])])))  # fmt: skip
add("train: keypoint x = 64 on a 64-wide crop", lambda c: TO(c, "--annotations", ann_edit(
    c, lambda ls: [ls[0], *(ln.split(":")[0] + ":" + ln.split(":")[1] + ": " + json.dumps([64] * 18) for ln in ls[1:])])))  # fmt: skip
add("train: coordinate 3000000000", lambda c: TO(c, "--annotations", ann_edit(
    c, lambda ls: [ls[0], row_with(ls[1], 2, 3000000000), *ls[2:]])))  # fmt: skip
add("train: coordinate beyond int64", lambda c: TO(c, "--annotations", ann_edit(
    c, lambda ls: [ls[0], row_with(ls[1], 2, 10**20), *ls[2:]])))  # fmt: skip
add("train: batch size 0", lambda c: TO(c, "--set", "train.batch_size=0"))
add("train: batch size -4", lambda c: TO(c, "--set", "train.batch_size=-4"))
add("train: 0 iterations", lambda c: TO(c, "--set", "train.iterations=0"))
add("train: log_every 0", lambda c: TO(c, "--set", "train.log_every=0"))
add("train: checkpoint_every 0", lambda c: TO(c, "--set", "train.checkpoint_every=0"))
add("train: num_workers -1", lambda c: TO(c, "--set", "train.num_workers=-1"))
add("train: amp_dtype fp8", lambda c: TO(c, "--set", "train.amp_dtype=fp8"))
add("train: unknown train key", lambda c: TO(c, "--set", "train.nope=1"))
add("train: ngf not a number", lambda c: TO(c, "--set", "model.ngf=abc"))
add("train: ngf 0", lambda c: TO(c, "--set", "model.ngf=0"))
add("train: learning rate -1", lambda c: TO(c, "--set", "optim.generator.lr=-1"))
add("train: unknown optimizer", lambda c: TO(c, "--set", "optim.nope.lr=1"))
add("train: --config missing", lambda c: TO(c, "--config", "methods/nope"))
add("train: --config not UTF-8", lambda c: TO(c, "--config", c.file("m.yaml", BINARY)))
add("train: --resume with nothing to resume", lambda c: TO(c, "--resume"))
add("train: --resume and --overwrite", lambda c: TO(c, "--resume", "--overwrite"))
add("train: unknown device", lambda c: TO(c, "--device", "tpu"))
add("train: cuda without a GPU", lambda c: TO(c, "--device", "cuda"))
add("train: --vgg-weights missing", lambda c: TO(c, "--vgg-weights", c.d / "vgg.pth", "--set", "loss.lambda_perceptual=1"))
add("train: --vgg-weights random bytes", lambda c: TO(c, "--vgg-weights", c.file("vgg.pth", os.urandom(4096)),
                                                      "--set", "loss.lambda_perceptual=1"))  # fmt: skip
add("train: --out holds other files", lambda c: T(c, "--out", c.file("run/notes.txt", "mine\n").parent))
add("train: --out holds another method's run", lambda c: ["train", "--method", "apatn", "--data", c.F.root,
                                                          "--device", "cpu", "--out", c.F.run])  # fmt: skip
add("train: latest.pt random bytes", lambda c: T(c, "--out", c.file("run/checkpoints/latest.pt", os.urandom(4096))
                                                 .parent.parent))  # fmt: skip
add("train: latest.pt torn", lambda c: T(c, "--out", torn(c, c.F.ckpt, "run/checkpoints/latest.pt").parent.parent))
add("train: latest.pt missing keys", lambda c: T(c, "--out", torch_file(
    c, "run/checkpoints/latest.pt", {"format": "reidaug-gan-checkpoint/2", "method": "patn"}).parent.parent))  # fmt: skip
add("train: latest.pt pickles code", lambda c: T(c, "--out", c.file("run/checkpoints/latest.pt", PICKLE_CODE)
                                                 .parent.parent))  # fmt: skip
add("train: latest.pt a list", lambda c: T(c, "--out", torch_file(c, "run/checkpoints/latest.pt", [1, 2]).parent.parent))
add("train: config.yaml not UTF-8 in a run", lambda c: T(c, "--out", c.file("run/config.yaml", BINARY).parent))
add("train: corrupt image, in a worker", lambda c: TO(c, "--set", "train.num_workers=1", data=root_bad_image(c)),
    changes_ok=True, why="the run folder's config.yaml: the same command restarts such a run")
add("train: corrupt image, no worker", lambda c: TO(c, data=root_bad_image(c)), changes_ok=True,
    why="the run folder's config.yaml: the same command restarts such a run")
add("train: image of another size", lambda c: TO(c, data=root_bad_image(c, "size")), changes_ok=True,
    why="the run folder's config.yaml: the same command restarts such a run")
add("train: camera 0 in an image name", lambda c: TO(c, data=market_cam0(c)))
os_cases("train", lambda c, o: T(c, "--out", o), "dir", full_size="1m")

# import-checkpoint
I = lambda c, f, *a, src="pose-transfer": ["import-checkpoint", "--from", src, f, *a]  # noqa: E731, E741
IO = lambda c, f, *a, src="pose-transfer": I(c, f, "--out", c.d / "imported", *a, src=src)  # noqa: E731
add("import-checkpoint: file missing", lambda c: IO(c, c.d / "nope.pth"))
add("import-checkpoint: unknown layout", lambda c: IO(c, c.F.ckpt, src="nope"))
add("import-checkpoint: random bytes", lambda c: IO(c, c.file("g.pth", os.urandom(4096))))
add("import-checkpoint: empty file", lambda c: IO(c, c.file("g.pth", b"")))
add("import-checkpoint: torn file", lambda c: IO(c, torn(c, c.F.ckpt, "g.pth")))
add("import-checkpoint: pickles code", lambda c: IO(c, c.file("g.pth", PICKLE_CODE)))
add("import-checkpoint: foreign keys", lambda c: IO(c, torch_file(c, "g.pth", {"foo.weight": __import__("torch").zeros(2)})))
add("import-checkpoint: not a dict", lambda c: IO(c, torch_file(c, "g.pth", [1, 2, 3])))
add("import-checkpoint: a reidaug checkpoint", lambda c: IO(c, c.F.ckpt))
add("import-checkpoint: method mismatch", lambda c: IO(c, c.F.ckpt, "--method", "xinggan"))
add("import-checkpoint: a folder as file", lambda c: IO(c, c.F.run))
add("import-checkpoint: --out non-empty", lambda c: I(c, c.F.ckpt, "--out", c.file("o/x", "x").parent))

# generate
G = lambda c, *a, ckpt=None, pairs=None, data=None, out=None: [  # noqa: E731
    "generate", "--checkpoint", ckpt or c.F.run, "--pairs", pairs or c.F.pairs, "--data", data or c.F.root,
    "--out", out or c.d / "gen", "--device", "cpu", "--no-progress", "--set", "num_workers=0", *a]  # fmt: skip
add("generate: checkpoint missing", lambda c: G(c, ckpt=c.d / "nope.pt"))
add("generate: run folder without checkpoints", lambda c: G(c, ckpt=(c.d / "r").mkdir() or c.d / "r"))
add("generate: checkpoint random bytes", lambda c: G(c, ckpt=c.file("c.pt", os.urandom(4096))))
add("generate: checkpoint empty", lambda c: G(c, ckpt=c.file("c.pt", b"")))
add("generate: checkpoint torn", lambda c: G(c, ckpt=torn(c, c.F.ckpt, "c.pt")))
add("generate: checkpoint missing keys", lambda c: G(c, ckpt=torch_file(c, "c.pt", {"format": "reidaug-gan-checkpoint/2",
                                                                                    "method": "patn"})))  # fmt: skip
add("generate: checkpoint weights missing", lambda c: G(c, ckpt=torch_file(c, "c.pt", {
    **__import__("torch").load(c.F.ckpt, weights_only=True), "model": {}})))  # fmt: skip
add("generate: checkpoint of an unknown method", lambda c: G(c, ckpt=torch_file(c, "c.pt", {
    **__import__("torch").load(c.F.ckpt, weights_only=True), "method": "nope"})))  # fmt: skip
add("generate: checkpoint pickles code", lambda c: G(c, ckpt=c.file("c.pt", PICKLE_CODE)))
add("generate: checkpoint a state dict", lambda c: G(c, ckpt=torch_file(c, "c.pt", {"w": __import__("torch").zeros(1)})))
add("generate: --method mismatch", lambda c: G(c, "--method", "xinggan"))
add("generate: --pairs missing", lambda c: G(c, pairs=c.d / "nope.csv"))
add("generate: --pairs not UTF-8", lambda c: G(c, pairs=c.file("p.csv", BINARY)))
add("generate: --pairs UTF-16", lambda c: G(c, pairs=c.file("p.csv", "from,to\n".encode("utf-16"))))
add("generate: --pairs another header", lambda c: G(c, pairs=c.file("p.csv", "src,dst\na,b\n")))
add("generate: --pairs header only", lambda c: G(c, pairs=c.file("p.csv", "from,to\n")))
add("generate: --pairs duplicate rows", lambda c: G(c, pairs=c.file("p.csv", c.F.pairs.read_text() + c.F.pairs.read_text().splitlines()[1] + "\n")))
add("generate: --pairs unknown images", lambda c: G(c, pairs=c.file("p.csv", "from,to\n0001_c1s1_000001_01.jpg,0001_c1s1_000002_01.jpg\n")))
add("generate: --pairs not Market names", lambda c: G(c, pairs=c.file("p.csv", "from,to\na.jpg,b.jpg\n")))
add("generate: --pairs camera 0 names", lambda c: G(c, data=market_cam0(c), pairs=c.file("p.csv", "from,to\n{},{}\n".format(
    *[p.name for p in sorted((c.d / "root" / "bounding_box_train").iterdir())][:2]))))  # fmt: skip
add("generate: --pairs a folder", lambda c: G(c, pairs=(c.d / "p.csv").mkdir() or c.d / "p.csv"))
add("generate: --data missing", lambda c: G(c, data=c.d / "nope"))
add("generate: --data without annotations", lambda c: G(c, data=(lambda r: shutil.rmtree(r / "annotations") or r)(c.root_copy())))
add("generate: --annotations not UTF-8", lambda c: G(c, "-a", c.file("a.csv", BINARY)))
add("generate: --annotations lacking an image", lambda c: G(c, "-a", ann_edit(c, lambda ls: ls[:-1])))
add("generate: keypoint outside the image (y = 500)", lambda c: G(c, "-a", ann_edit(
    c, lambda ls: [ls[0], *(row_with(ln, 2, 500) for ln in ls[1:])])))  # fmt: skip
add("generate: coordinate 3000000000", lambda c: G(c, "-a", ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 2, 3000000000), *ls[2:]])))
add("generate: coordinate beyond int64", lambda c: G(c, "-a", ann_edit(c, lambda ls: [ls[0], row_with(ls[1], 2, 10**20), *ls[2:]])))
add("generate: --batch-size 0", lambda c: G(c, "--batch-size", "0"))
add("generate: --batch-size -1", lambda c: G(c, "--batch-size", "-1"))
add("generate: num_workers -1", lambda c: G(c, "--set", "num_workers=-1"))
add("generate: writer_threads 0", lambda c: G(c, "--set", "writer_threads=0"))
add("generate: jpeg_quality 500", lambda c: G(c, "--set", "jpeg_quality=500"))
add("generate: amp_dtype fp8", lambda c: G(c, "--set", "amp_dtype=fp8"))
add("generate: 3 sources from a pairs file", lambda c: G(c, "--set", "sources=3"))
add("generate: 0 sources", lambda c: G(c, "--set", "sources=0"))
add("generate: unknown device", lambda c: G(c, "--device", "tpu"))
add("generate: --seed not a number", lambda c: G(c, "--seed", "x"))
add("generate: --out inside bounding_box_train", lambda c: G(c, data=c.root_copy(), out=c.d / "root" / "bounding_box_train"))
add("generate: --out inside query", lambda c: G(c, data=c.root_copy(), out=c.d / "root" / "query" / "gen"))
add("generate: --out the Market root", lambda c: G(c, data=c.root_copy(), out=c.d / "root"))
add("generate: --out non-empty, not a generate output", lambda c: G(c, out=c.file("gen/notes.txt", "mine\n").parent))
add("generate: --out of another checkpoint", lambda c: G(c, ckpt=torch_file(c, "c.pt", {
    **__import__("torch").load(c.F.ckpt, weights_only=True), "iteration": 1}), out=shutil.copytree(c.F.gen, c.d / "gen")))  # fmt: skip
add("generate: --out marker not JSON", lambda c: G(c, out=(lambda d: (d / ".reidaug-generate.json").write_text("{")
                                                              and d)(shutil.copytree(c.F.gen, c.d / "gen"))))  # fmt: skip
add("generate: corrupt image, in a worker", lambda c: G(c, "--set", "num_workers=1", data=root_bad_image(c)))
add("generate: corrupt image, no worker", lambda c: G(c, data=root_bad_image(c)))
add("generate: image of another size", lambda c: G(c, data=root_bad_image(c, "size")))
os_cases("generate", lambda c, o: G(c, out=o), "dir", full_size="64k")

# augment
A = lambda c, *a, data=None, ckpt=None, out=None: [  # noqa: E731
    "augment", "--data", data or c.F.root, "--out", out or c.d / "aug", *(["--checkpoint", ckpt or c.F.run]
    if ckpt != "" else []), "--device", "cpu", "--no-progress", "--set", "generate.num_workers=0", *a]  # fmt: skip
add("augment: --data missing", lambda c: A(c, data=c.d / "nope"))
add("augment: --checkpoint missing", lambda c: A(c, ckpt=c.d / "nope.pt"))
add("augment: no --checkpoint", lambda c: A(c, ckpt=""))
add("augment: --checkpoint random bytes", lambda c: A(c, ckpt=c.file("c.pt", os.urandom(4096))))
add("augment: --checkpoint torn", lambda c: A(c, ckpt=torn(c, c.F.ckpt, "c.pt")))
add("augment: --portion 0", lambda c: A(c, "--portion", "0"))
add("augment: --portion 1.5", lambda c: A(c, "--portion", "1.5"))
add("augment: --portion 1 without --ratio", lambda c: A(c, "--portion", "1"))
add("augment: --portion not a number", lambda c: A(c, "--portion", "half"))
add("augment: --ratio 4", lambda c: A(c, "--portion", "1", "--ratio", "4"))
add("augment: --ratio 2 at p 0.3", lambda c: A(c, "--ratio", "2"))
add("augment: unknown pose source", lambda c: A(c, "--pose-source", "nope"))
add("augment: unknown training mode", lambda c: A(c, "--generator-trained-on", "nope"))
add("augment: unknown materialize", lambda c: A(c, "--materialize", "nope"))
add("augment: leakage (trained on full, mode reduced)", lambda c: A(c, "--generator-trained-on", "reduced"))
add("augment: reduced mode with an unknown method", lambda c: A(c, "--generator-trained-on", "reduced", "-m", "nope", ckpt=""))
add("augment: --annotations missing", lambda c: A(c, "-a", c.d / "nope.csv"))
add("augment: --annotations not UTF-8", lambda c: A(c, "-a", c.file("a.csv", BINARY)))
add("augment: --annotations y = 500", lambda c: A(c, "-a", ann_edit(c, lambda ls: [ls[0], *(row_with(ln, 2, 500) for ln in ls[1:])])))
add("augment: generate batch size 0", lambda c: A(c, "--set", "generate.batch_size=0"))
add("augment: unknown device", lambda c: A(c, "--device", "tpu"))
add("augment: --out non-empty, not an augmentation", lambda c: A(c, out=c.file("aug/notes.txt", "x").parent))
add("augment: --out settings not JSON", lambda c: A(c, out=c.file("aug/augment.json", "{").parent))
add("augment: --out settings not UTF-8", lambda c: A(c, out=c.file("aug/augment.json", BINARY).parent))
add("augment: --out of other settings", lambda c: A(c, out=c.file("aug/augment.json", json.dumps(
    {"data_root": "/elsewhere", "config": {}, "generator": {}})).parent))  # fmt: skip
add("augment: corrupt image, in a worker", lambda c: A(c, "--set", "generate.num_workers=1", data=root_bad_image(c)),
    changes_ok=True, why="the claimed output folder (augment.json, split lists): the same command completes it")
add("augment: camera 0 in an image name", lambda c: A(c, data=market_cam0(c)))
os_cases("augment", lambda c, o: A(c, out=o), "dir", full_size="128k")

# reid-eval
R = lambda c, *a, root=None, out=None: ["reid-eval", root or c.F.root, "--out", out or c.d / "reid.json", "-q",  # noqa: E731
                                        "--device", "cpu", *sets(REID), *a]  # fmt: skip
add("reid-eval: root missing", lambda c: R(c, root=c.d / "nope"))
add("reid-eval: root without query", lambda c: R(c, root=(lambda r: shutil.rmtree(r / "query") or r)(c.root_copy())))
add("reid-eval: root with an empty query", lambda c: R(c, root=(lambda r: [p.unlink() for p in (r / "query").iterdir()] and r)(c.root_copy())))
add("reid-eval: --out not .json", lambda c: R(c, out=c.d / "reid.txt"))
add("reid-eval: --out exists", lambda c: R(c, out=c.file("reid.json", "{}")))
add("reid-eval: unknown backbone", lambda c: R(c, "--backbone", "nope"))
add("reid-eval: unknown loss", lambda c: R(c, "--loss", "nope"))
add("reid-eval: --epochs 0", lambda c: R(c, "--epochs", "0"))
add("reid-eval: --batch-size 0", lambda c: R(c, "--batch-size", "0"))
add("reid-eval: --batch-size 1", lambda c: R(c, "--batch-size", "1"))
add("reid-eval: batch larger than the training set", lambda c: R(c, "--batch-size", "500"))
add("reid-eval: --height 4", lambda c: R(c, "--height", "4"))
add("reid-eval: --workers -1", lambda c: R(c, "--workers", "-1"))
add("reid-eval: triplet batch not a multiple of instances", lambda c: R(c, "--loss", "triplet", "--batch-size", "6"))
add("reid-eval: unknown sampler", lambda c: R(c, "--set", "sampler=nope"))
add("reid-eval: two steps for single_step", lambda c: R(c, "--set", "stepsize=[1,2]"))
add("reid-eval: unknown transform", lambda c: R(c, "--set", "transforms=[nope]"))
add("reid-eval: unknown device", lambda c: R(c, "--device", "tpu"))
add("reid-eval: --weights missing", lambda c: R(c, "--weights", c.d / "w.pth"))
add("reid-eval: --weights random bytes", lambda c: R(c, "--weights", c.file("w.pth", os.urandom(4096))))
add("reid-eval: --weights torn", lambda c: R(c, "--weights", torn(c, c.F.ckpt, "w.pth")))
add("reid-eval: --weights pickles code", lambda c: R(c, "--weights", c.file("w.pth", PICKLE_CODE)))
add("reid-eval: --weights matching nothing", lambda c: R(c, "--weights", torch_file(c, "w.pth", {"x": __import__("torch").zeros(1)})))
add("reid-eval: --pretrained, no cached weights", lambda c: R(c, "--pretrained", "--backbone", "osnet_x0_25"))
add("reid-eval: --resume, last.pth random bytes", lambda c: R(c, "--resume", out=c.file("reid.run/last.pth", os.urandom(4096)).parent.with_name("reid.json")))
add("reid-eval: --resume, last.pth missing keys", lambda c: R(c, "--resume", out=torch_file(c, "reid.run/last.pth", {"epoch": 1}).parent.with_name("reid.json")))
add("reid-eval: --run-dir a file", lambda c: R(c, "--run-dir", c.file("rd", "x")))
add("reid-eval: --run-dir holding the dataset", lambda c: R(c, "--run-dir", c.d, root=c.root_copy()))
add("reid-eval: corrupt image, in a worker", lambda c: R(c, "--workers", "1", root=root_bad_image(c)),
    changes_ok=True, why="the run folder's log.txt and config.yaml")
add("reid-eval: camera 0 in an image name", lambda c: R(c, root=market_cam0(c)))
os_cases("reid-eval", lambda c, o: R(c, out=o), "json", full_size="64k")

# experiment (a tiny sweep: the full real set only, one seed, one re-ID epoch)
def exp_config(c: Ctx, **values) -> Path:
    cfg = {"data": str(c.F.root), "out": str(c.d / "exp"), "portions": [1.0], "seeds": [0], "generators": {},
           "reid": ["reid/default"], "reid_overrides": REID, "device": "cpu", "metrics": [], **values}
    return c.file("exp.yaml", json.dumps(cfg))  # JSON is YAML


EX = lambda c, *a, **v: ["experiment", "--config", exp_config(c, **v), "--no-progress", *a]  # noqa: E731
add("experiment: no data", lambda c: ["experiment", "--out", c.d / "x"])
add("experiment: --data missing", lambda c: EX(c, "--data", c.d / "nope"))
add("experiment: --data without bounding_box_train", lambda c: EX(c, "--data", (c.d / "e").mkdir() or c.d / "e"))
add("experiment: --config missing", lambda c: ["experiment", "--config", c.d / "nope.yaml"])
add("experiment: config not UTF-8", lambda c: ["experiment", "--config", c.file("e.yaml", BINARY)])
add("experiment: generator checkpoint missing", lambda c: EX(c, generators={"patn": str(c.d / "nope.pt")}))
add("experiment: generator checkpoint random bytes", lambda c: EX(c, portions=[0.5], generators={
    "patn": str(c.file("g.pt", os.urandom(4096)))}))  # fmt: skip
add("experiment: portion 0", lambda c: EX(c, portions=[0]))
add("experiment: portion 2", lambda c: EX(c, portions=[2.0]))
add("experiment: no portions", lambda c: EX(c, portions=[]))
add("experiment: no seeds", lambda c: EX(c, seeds=[]))
add("experiment: reserved generator label", lambda c: EX(c, generators={"none": str(c.F.ckpt)}))
add("experiment: unknown re-ID config", lambda c: EX(c, reid=["reid/nope"]))
add("experiment: bad re-ID override", lambda c: EX(c, reid_overrides=[*REID, "epochs=0"]))
add("experiment: unknown metric", lambda c: EX(c, portions=[0.5], generators={"patn": str(c.F.ckpt)}, metrics=["nope"]))
add("experiment: bad augment setting", lambda c: EX(c, portions=[0.5], generators={"patn": str(c.F.ckpt)},
                                                    augment={"pose_source": "nope"}))  # fmt: skip
add("experiment: seeds not numbers", lambda c: EX(c, seeds=["a"]))
add("experiment: --jobs 0", lambda c: EX(c, "--jobs", "0"))
add("experiment: --jobs not a number", lambda c: EX(c, "--jobs", "two"))
os_cases("experiment", lambda c, o: EX(c, "--out", o), "dir", skip=("full",))

# metrics
M = lambda c, *a, gen=None, out=None: ["metrics", "--generated", gen or c.F.gen, "--data", c.F.root, "--metrics",  # noqa: E731
                                       "ssim,l1", "--device", "cpu", "--no-progress", "--out",
                                       out or c.d / "m.json", *a]  # fmt: skip
add("metrics: --generated missing", lambda c: M(c, gen=c.d / "nope"))
add("metrics: --generated without manifest", lambda c: M(c, gen=(c.d / "g").mkdir() or c.d / "g"))
add("metrics: manifest not UTF-8", lambda c: M(c, gen=c.file("g/manifest.csv", BINARY).parent))
add("metrics: manifest without columns", lambda c: M(c, gen=c.file("g/manifest.csv", "a,b\n1,2\n").parent))
add("metrics: manifest empty", lambda c: M(c, gen=c.file("g/manifest.csv", "").parent))
add("metrics: manifest names missing images", lambda c: M(c, gen=c.file("g/manifest.csv", (c.F.gen / "manifest.csv").read_text()).parent))
add("metrics: a generated image corrupt", lambda c: M(c, gen=(lambda d: next(d.glob("*.jpg")).write_bytes(b"nope") and d)(
    shutil.copytree(c.F.gen, c.d / "g"))))  # fmt: skip
add("metrics: --data missing", lambda c: ["metrics", "--generated", c.F.gen, "--data", c.d / "nope"])
add("metrics: unknown metric", lambda c: M(c, "--metrics", "nope"))
add("metrics: --weights without =", lambda c: M(c, "--weights", "inception"))
add("metrics: --weights unknown network", lambda c: M(c, "--weights", "nope=x.pth"))
add("metrics: --weights file missing", lambda c: M(c, "--metrics", "fid", "--weights", f"inception={c.d / 'no.pth'}"))
add("metrics: --weights random bytes", lambda c: M(c, "--metrics", "lpips", "--weights",
                                                   f"lpips={c.file('w.pth', os.urandom(4096))}"))  # fmt: skip
add("metrics: --split train", lambda c: M(c, "--split", "train"))
add("metrics: --split test without pairs", lambda c: M(c, "--split", "test"))
add("metrics: --pairs not generated", lambda c: M(c, "--pairs", c.file("p.csv", "from,to\n{},{}\n".format(
    *[ln.split(":")[0] for ln in c.F.ann.read_text().splitlines()[1:]][::-20][:2]))))  # fmt: skip
add("metrics: --pairs not UTF-8", lambda c: M(c, "--pairs", c.file("p.csv", BINARY)))
add("metrics: unknown device", lambda c: M(c, "--device", "tpu"))
add("metrics: unknown pose backend", lambda c: M(c, "--metrics", "pckh", "--pose-backend", "nope"))
add("metrics: --out not .json", lambda c: M(c, out=c.d / "m.txt"))
add("metrics: batch size 0", lambda c: M(c, "--set", "batch_size=0"))
os_cases("metrics", lambda c, o: M(c, out=o), "json", full_size="4k")

# report
RP = lambda c, exp, *a: ["report", exp, *a]  # noqa: E731


def fake_experiment(c: Ctx, results: str | bytes = "generator,backbone,loss,portion,seed,mAP,rank1,rank5,rank10,"
                    "n_train\nnone,osnet,softmax,0.1,0,1.0,1.0,1.0,1.0,10\n") -> Path:  # fmt: skip
    """An experiment folder holding only results.csv and a config naming one generator."""
    c.file("exp/results.csv", results)
    c.file("exp/experiment.yaml", "generators: {patn: run/checkpoints/latest.pt}\n")
    return c.d / "exp"


add("report: folder missing", lambda c: RP(c, c.d / "nope"))
add("report: a file", lambda c: RP(c, c.file("f", "x")))
add("report: no results.csv", lambda c: RP(c, (c.d / "e").mkdir() or c.d / "e"))
add("report: results.csv not UTF-8", lambda c: RP(c, fake_experiment(c, BINARY)))
add("report: results.csv without columns", lambda c: RP(c, fake_experiment(c, "a,b\n1,2\n")))
add("report: results.csv empty", lambda c: RP(c, fake_experiment(c, "")))
add("report: results.csv mAP not a number", lambda c: RP(c, fake_experiment(c, "generator,backbone,loss,portion,seed,"
                                                         "mAP,rank1,rank5,rank10,n_train\nnone,o,s,0.1,0,x,1,1,1,10\n")))  # fmt: skip
add("report: experiment.yaml not YAML", lambda c: RP(c, (lambda e: c.file("exp/experiment.yaml", "a: [1\n") and e)(fake_experiment(c))))
add("report: augment settings not JSON", lambda c: RP(c, (lambda e: c.file("exp/augment/patn/p0.1_s0/augment.json", "{")
                                                        and e)(fake_experiment(c))))  # fmt: skip
add("report: image metrics not JSON", lambda c: RP(c, (lambda e: c.file("exp/image_metrics/patn.json", "{") and e)(fake_experiment(c))))
os_cases("report", lambda c, o: RP(c, fake_experiment(c), "--out", o), "html", full_size="4k")


# -- running ----------------------------------------------------------------------------------------------------


def snapshot(d: Path) -> dict[str, tuple]:
    """Every entry under `d` with its kind, size and modification time."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(d):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            try:
                st = p.lstat()
            except OSError:
                continue
            folder = p.is_dir() and not p.is_symlink()  # a folder's time changes when a file comes and goes
            out[str(p.relative_to(d))] = (st.st_mode >> 12, 0, 0) if folder else (st.st_mode >> 12, st.st_size,
                                                                                  st.st_mtime_ns)
    return out


@dataclass
class Outcome:
    name: str
    kind: str  # clean | traceback | accepted | unclean | skipped
    code: int | None = None
    detail: str = ""
    seconds: float = 0.0
    changed: list[str] = field(default_factory=list)


def _alarm(signum, frame):
    raise CaseTimeout


def run_case(case: Case, fixtures: Fixtures, base: Path) -> Outcome:
    from reidaug.cli import main

    base.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(prefix=f"case{CASES.index(case):03d}-" if case in CASES else "case-", dir=base))
    ctx = Ctx(d, fixtures)
    t0 = time.time()
    cwd = os.getcwd()
    try:
        try:
            argv = [str(a) for a in case.argv(ctx)]
        except Skip as e:
            return Outcome(case.name, "skipped", detail=str(e))
        before = snapshot(d)
        out, err = io.StringIO(), io.StringIO()
        escaped = None
        os.chdir(d)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TIMEOUT_S)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(argv)
        except CaseTimeout:
            code, escaped = None, f"still running after {TIMEOUT_S} s"
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - what escapes the command boundary is the finding
            code, escaped = None, f"{type(e).__name__}: {str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}"
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
            os.chdir(cwd)
        after = snapshot(d)
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        text = err.getvalue()
        lines = [ln for ln in text.strip().splitlines() if ln.strip()]
        o = Outcome(case.name, "unclean", code, seconds=round(time.time() - t0, 2), changed=changed)
        if escaped or "Traceback (most recent call last)" in text + out.getvalue():
            o.kind, o.detail = "traceback", escaped or next((ln for ln in reversed(lines) if ln.strip()), "")[:200]
            if escaped and escaped.startswith("still running"):
                o.kind = "unclean"
        elif code == 0:
            o.kind, o.detail = "accepted", (out.getvalue().strip().splitlines() or [""])[-1][:200]
        elif code == 2 and len(lines) == 1 and lines[0].startswith("reidaug: error: ") and (not changed or case.changes_ok):
            o.kind, o.detail = "clean", lines[0][:200]
        else:
            o.detail = (f"exit {code}, {len(lines)} lines: " + " | ".join(lines[:3]))[:300]
            if code == 2 and len(lines) == 1 and changed:
                o.detail = f"left behind {', '.join(changed[:4])}: {lines[0]}"[:300]
        return o
    finally:
        ctx.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="Run the cases whose name contains TEXT.")
    ap.add_argument("--list", action="store_true", help="List the cases and exit.")
    ap.add_argument("--keep", type=Path, help="Work in this folder and keep it (default: a temporary one).")
    ap.add_argument("--verbose", "-v", action="store_true", help="One line per case on stderr.")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if not args.only or any(s in c.name for s in args.only)]
    if args.list:
        print("\n".join(c.name for c in cases))
        return 0
    os.environ.pop("REIDAUG_DEBUG", None)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    base = args.keep or Path(tempfile.mkdtemp(prefix="reidaug-bad-inputs-"))
    base.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    fixtures = Fixtures(base / "fixtures")
    outcomes = []
    try:
        for case in cases:
            o = run_case(case, fixtures, base / "cases")
            outcomes.append(o)
            if args.verbose:
                print(f"{o.kind:9s} {o.seconds:5.1f}s {o.name}: {o.detail}", file=sys.stderr)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    count = lambda k: sum(o.kind == k for o in outcomes)  # noqa: E731
    report = {
        "cases": len(outcomes),
        "clean": count("clean"),
        "tracebacks": count("traceback"),
        "silent_acceptances": count("accepted"),
        "unclean": count("unclean"),
        "skipped": count("skipped"),
        "seconds": round(time.time() - t0, 1),
        "non_clean": [{"case": o.name, "class": o.kind, "detail": o.detail} for o in outcomes if o.kind != "clean"],
    }
    print(json.dumps(report, indent=1))
    return 0 if all(o.kind in ("clean", "skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
