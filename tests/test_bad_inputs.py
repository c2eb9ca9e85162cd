"""The bad-input battery: every mistake and fault a new user met (issue 12), through `normlab-train`.

For each case: the exit status is not 0, stderr is one line `normlab: error: ...` (no traceback)
that names the value and the fix, and the run tree and the data are byte for byte as before the
case. The cases run in batches (tests/cli_batch.py: one Python process, each case exactly what the
console script runs), grouped by what they need: plain command lines, data, runs that exist,
read-only folders (a private mount namespace, for root too).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from helpers import can_unshare, namespace, run_cli_batch
from normlab.data.iwslt14 import prepare_parallel_text

IMG = ["scale=smoke", "data.source=imagefolder", "trainer.progress=false", "probe=none"]
MT = ["experiment=iwslt14_transformer", "scale=smoke", "trainer.progress=false"]

# (id, argv, fragments the one-line error must hold: the value, then the fix)
COMMAND_LINE = [
    ("unknown-norm", ["norm=bnn"], ["norm 'bnn'", "valid names: bn,"]),
    ("unknown-scale", ["scale=huge"], ["scale 'huge'", "valid names"]),
    ("no-such-preset", ["experiment=table1", "scale=long"], ["'long'", "add configs/preset"]),
    ("unknown-key", ["trainer.epochz=3"], ["trainer.epochz", "trainer.epochs"]),
    ("slurm-no-partition", ["-m", "launcher=slurm", "norm=bn,ln"], ["partition", "add hydra."]),
    ("negative-lr", ["optim.lr=-0.1"], ["optim.lr=-0.1", "e.g. optim.lr=0.1"]),
    ("text-lr", ["optim.lr=abc"], ["optim.lr='abc'", "e.g. optim.lr=0.1"]),
    ("zero-lr", ["optim.lr=0"], ["optim.lr=0", "e.g. optim.lr=0.1"]),
    ("momentum", ["optim.momentum=1.5"], ["optim.momentum=1.5", "e.g. optim.momentum=0.9"]),
    ("weight-decay", ["optim.weight_decay=-1"], ["optim.weight_decay=-1", "e.g."]),
    ("gamma", ["optim.schedule.gamma=abc"], ["optim.schedule.gamma='abc'", "e.g."]),
    ("schedule", ["optim.schedule.name=exponential"], ["'exponential'", "multistep"]),
    ("milestones", ["optim.schedule.milestones=[a,b]"], ["['a', 'b']", "milestones=[80,120]"]),
    ("text-epochs", ["trainer.epochs=abc"], ["trainer.epochs='abc'", "e.g. trainer.epochs="]),
    ("zero-epochs", ["trainer.epochs=0"], ["trainer.epochs=0", "at least 1"]),
    ("batch-size", ["trainer.batch_size=-4"], ["trainer.batch_size=-4", "at least 1"]),
    ("max-steps", ["trainer.max_steps=0"], ["trainer.max_steps=0", "at least 1"]),
    ("grad-clip", ["trainer.grad_clip=x"], ["trainer.grad_clip='x'", "e.g."]),
    ("text-seed", ["seed=abc"], ["seed='abc'", "e.g. seed="]),
    ("resume", ["resume=maybe"], ["resume='maybe'", "resume=auto"]),
    ("cuda", ["device=cuda"], ["device=cuda", "device=cpu"]),
    ("pn-on-resnet20", ["norm=pn"], ["norm=pn cannot train model=resnet20", "use norm=pnv"]),
]
DATA = [
    ("no-image-folder", ["data.root=/nonexistent/cifar"], ["/nonexistent/cifar", "data.root="]),
    ("data-source", ["data.source=ftp"], ["'ftp'", "imagefolder"]),
    ("train-limit", ["data.train_limit=0"], ["data.train_limit=0", "e.g. data.train_limit="]),
    ("gn-groups", ["norm=gn", "norm.groups=5"], ["norm.groups=5", "choose a divisor"]),
    ("bn-scaling", ["norm.layer_scaling=true"], ["layer_scaling=true", "=false"]),
    ("probe-layer", ["probe=batch_stats", "probe.layers=[nope]"], ["'nope'", "stem_norm"]),
]
TEXT = [  # translation data (the image folder's data.* keys do not exist there)
    ("no-dir", ["data=parallel_text"], ["data.dir", "add data.dir="]),
    ("missing-dir", ["data=parallel_text", "data.dir=/nonexistent", "data.src=fr", "data.tgt=en"],
     ["data.dir=/nonexistent", "point it at"]),
    ("no-test", ["data=parallel_text", "data.dir={no_test}", "data.src=fr", "data.tgt=en"],
     ["test.fr", "add them"]),
    ("same-langs", ["data=parallel_text", "data.dir={corpus}", "data.src=en", "data.tgt=en"],
     ["'en'", "two different codes"]),
    ("uneven", ["data=parallel_text", "data.dir={uneven}", "data.src=fr", "data.tgt=en"],
     ["has 3 lines but", "paired line by line"]),
    ("latin1", ["data=parallel_text", "data.dir={latin1}", "data.src=fr", "data.tgt=en"],
     ["not valid UTF-8", "iconv"]),
    ("iwslt14-nothing", [], ["data.prepared_dir=DIR", "data.download=true"]),
    ("iwslt14-missing", ["data.prepared_dir=/nonexistent"], ["/nonexistent", "fairseq-layout"]),
    ("pn-warmup", ["data=parallel_text", "data.dir={corpus}", "data.src=fr", "data.tgt=en",
                   "norm=pn", "norm.warmup_iters=-1"], ["warmup_iters=-1", "use 0"]),
    ("pn-alpha", ["data=parallel_text", "data.dir={corpus}", "data.src=fr", "data.tgt=en",
                  "norm=pn", "norm.alpha_fwd=1.5"], ["alpha_fwd=1.5", "(0, 1)"]),
    ("test-split", ["data=parallel_text", "data.dir={corpus}", "data.src=fr", "data.tgt=en",
                    "data.test_split=dev"], ["data.test_split='dev'", "use one of"]),
]  # fmt: skip
EXISTING = [  # {A}: a complete run; {B}: a run cut off (checkpoint, no summary); ...
    ("complete-other-config", ["optim.lr=0.05", "hydra.run.dir={A}"],
     ["optim.lr: 0.1 -> 0.05", "undo those overrides"]),
    ("checkpoint-other-config", ["norm=ln", "hydra.run.dir={B}"],
     ["norm.name: 'bn' -> 'ln'", "undo those overrides"]),
    ("locked", ["hydra.run.dir={C}"], ["is in use by pid", "wait for it to finish"]),
    ("resume-never", ["resume=never", "hydra.run.dir={B}"], ["resume=never", "delete the run"]),
    ("corrupt-checkpoint", ["hydra.run.dir={D}"], ["cannot read checkpoint", "delete it"]),
    ("corrupt-summary", ["hydra.run.dir={E}"], ["not valid JSON", "delete it"]),
    ("run-dir-is-a-file", ["hydra.run.dir={F}"], ["is a file", "remove it"]),
]  # fmt: skip


def _check(result: dict, fragments: list[str]) -> None:
    err = result["stderr"]
    assert result["rc"] != 0, result
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("normlab: error: "), err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    assert result["unchanged"], f"the run tree or the data changed: {lines[0]}"


def _batch(cases, base, env, watch, prefix=(), **paths) -> dict[str, dict]:
    runs = [
        {"argv": [*base, *(a.format(**paths) for a in argv)], "env": env, "watch": watch}
        for _, argv, _ in cases
    ]
    return dict(zip((c[0] for c in cases), run_cli_batch(runs, env, list(prefix)), strict=True))


@pytest.fixture(scope="module")
def world(tmp_path_factory, image_folder):
    """A runs tree with one complete run, the image folder and small text corpora."""
    root = tmp_path_factory.mktemp("bad-inputs")
    runs = root / "runs"
    env = {"NORMLAB_RUNS": str(runs), "XDG_CACHE_HOME": str(root / "cache")}
    corpus = root / "corpus"
    corpus.mkdir()
    for split, n in (("train", 40), ("test", 4)):
        (corpus / f"{split}.fr").write_text(
            "".join(f"Le café numéro {i} est prêt.\n" for i in range(n))
        )
        (corpus / f"{split}.en").write_text(
            "".join(f"Coffee number {i} is ready.\n" for i in range(n))
        )
    no_test, uneven, latin1 = root / "no-test", root / "uneven", root / "latin1"
    for folder in (no_test, uneven, latin1):
        shutil.copytree(corpus, folder)
    for name in ("test.fr", "test.en"):
        (no_test / name).unlink()
    (uneven / "train.fr").write_text("un\ndeux\ntrois\n")
    (uneven / "train.en").write_text("one\ntwo\n")
    (latin1 / "train.fr").write_bytes("café\n".encode("latin-1") * 40)
    runs.mkdir()
    # Prepared once here (its progress output is not what the cases are about); cases hit the cache.
    prepare_parallel_text(corpus, "fr", "en", cache_dir=root / "cache" / "normlab" / "iwslt14")
    return {
        "root": root, "runs": runs, "env": env, "base": [*IMG, f"data.root={image_folder}"],
        "image_folder": image_folder, "corpus": corpus, "no_test": no_test, "uneven": uneven,
        "latin1": latin1,
    }  # fmt: skip


@pytest.fixture(scope="module")
def variants(world) -> dict[str, Path]:
    """A: a complete run; B, C: cut off (a checkpoint, no summary); D: an unreadable checkpoint;
    E: an unreadable summary; F: a file where a run directory would go."""
    runs = world["runs"]
    (done,) = run_cli_batch([{"argv": [*world["base"], "trainer.max_steps=2"]}], world["env"])
    assert done["rc"] == 0, done["stderr"][-2000:]
    complete = Path(done["stdout"].strip().splitlines()[-1].split(" ")[1])  # complete: <dir> (...
    assert complete.parent == runs / "cifar10_resnet20" / "smoke", complete
    made = {"A": complete}
    for name in "BCDE":
        made[name] = Path(shutil.copytree(complete, runs / "variants" / name))
        if name != "E":
            (made[name] / "summary.json").unlink()
    (made["D"] / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    (made["E"] / "summary.json").write_text('{"status": "comp')
    made["F"] = runs / "variants" / "F"
    made["F"].write_text("a file where the run directory would go\n")
    return made


def _watch(world) -> list[str]:
    folders = ("corpus", "no_test", "uneven", "latin1", "image_folder")
    return [str(world["runs"]), *(str(world[k]) for k in folders)]


@pytest.fixture(scope="module")
def command_line_results(world):
    return _batch(COMMAND_LINE, world["base"], world["env"], _watch(world))


@pytest.mark.parametrize(("case", "fragments"), [(c[0], c[2]) for c in COMMAND_LINE])
def test_a_bad_command_line_is_one_sentence(command_line_results, case, fragments):
    if case == "cuda":
        pytest.importorskip("torch").cuda.is_available() and pytest.skip("a GPU is visible")
    _check(command_line_results[case], fragments)


@pytest.fixture(scope="module")
def data_results(world):
    paths = {k: world[k] for k in ("corpus", "no_test", "uneven", "latin1")}
    results = _batch(DATA, world["base"], world["env"], _watch(world))
    return results | _batch(TEXT, MT, world["env"], _watch(world), **paths)


@pytest.mark.parametrize(("case", "fragments"), [(c[0], c[2]) for c in DATA + TEXT])
def test_bad_data_or_options_are_one_sentence_and_leave_nothing(data_results, case, fragments):
    """Also the refusals that come only once the job has started (the data is read, the model
    built): the folder Hydra made for the new run is removed again."""
    _check(data_results[case], fragments)


@pytest.fixture(scope="module")
def existing_results(world, variants):
    lock = variants["C"] / "run.lock"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import fcntl, os, sys, time
            fd = os.open({str(lock)!r}, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)
            print("locked", flush=True)
            time.sleep(600)
        """)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"
        return _batch(EXISTING, world["base"], world["env"], _watch(world), **variants)
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize(("case", "fragments"), [(c[0], c[2]) for c in EXISTING])
def test_a_refused_run_directory_is_left_as_it_was(existing_results, case, fragments):
    """Issue 12 item 3: Hydra used to overwrite .hydra/{config,overrides,hydra}.yaml first."""
    _check(existing_results[case], fragments)


def test_the_same_command_on_a_complete_run_writes_nothing(world, variants):
    complete = variants["A"]
    (result,) = run_cli_batch(
        [{"argv": [*world["base"], "trainer.max_steps=2"], "watch": [str(complete)]}],
        world["env"],
    )
    assert result["rc"] == 0 and result["unchanged"], result
    assert result["stdout"].startswith("run already complete: ")


needs_namespace = pytest.mark.skipif(
    not can_unshare(), reason="needs `unshare -Urm` (user namespaces) to mount a folder read-only"
)


@needs_namespace
def test_read_only_run_folders_are_refused_before_launch(world, variants, tmp_path):
    """Issue 12 item 5: a read-only parent of the run directory, a read-only NORMLAB_RUNS and a
    read-only run directory to resume: one sentence each, naming the folder and the fix."""
    ro_parent, ro_runs = tmp_path / "ro-parent", tmp_path / "ro-runs"
    ro_parent.mkdir()
    ro_runs.mkdir()
    cut_off = variants["B"]  # resumable with the same command: it would write
    cases = [
        ("parent", [], {"NORMLAB_RUNS": str(ro_parent / "runs")}, [str(ro_parent), "NORMLAB_RUNS"]),
        ("runs", [], {"NORMLAB_RUNS": str(ro_runs)}, [str(ro_runs), "NORMLAB_RUNS"]),
        ("sweep", ["-m", "seed=1,2"], {"NORMLAB_RUNS": str(ro_runs)}, [str(ro_runs), "writable"]),
        ("run-dir", [f"hydra.run.dir={cut_off}", "trainer.max_steps=2"], {},
         [str(cut_off), "chmod -R u+w"]),
    ]  # fmt: skip
    watch = [str(tmp_path), *_watch(world)]
    runs = [
        {"argv": [*world["base"], *argv], "env": {**world["env"], **env}, "watch": watch}
        for _, argv, env, _ in cases
    ]
    prefix = namespace(read_only=(ro_parent, ro_runs, cut_off))
    results = run_cli_batch(runs, world["env"], prefix)
    for (name, _, _, fragments), result in zip(cases, results, strict=True):
        assert "read-only" in result["stderr"], name
        _check(result, fragments)


def test_a_run_directory_printed_by_the_cli_can_be_pasted_back(world):
    """Issue 12 item 11: run names hold '=' and ',' (Hydra's override syntax); the path the CLI
    prints works as hydra.run.dir=<path> as printed."""
    argv = [*world["base"], "trainer.max_steps=1", "optim.lr=0.05", "norm=gn"]
    (first,) = run_cli_batch([{"argv": argv}], world["env"])
    assert first["rc"] == 0, first["stderr"][-2000:]
    printed = first["stdout"].strip().splitlines()[-1].split(" ")[1]
    assert "=" in printed and "," in printed and Path(printed).is_dir(), printed
    moved = Path(str(world["root"] / "pasted" / Path(printed).name))
    shutil.copytree(printed, moved)
    again = run_cli_batch(
        [
            {"argv": [*argv, f"hydra.run.dir={printed}"]},
            {"argv": [*argv, f"hydra.run.dir={moved}"], "watch": [str(moved)]},
        ],
        world["env"],
    )
    for result in again:
        assert result["rc"] == 0, result["stderr"][-2000:]
        assert result["stdout"].startswith("run already complete: "), result["stdout"]
    assert again[1]["unchanged"]
    assert os.path.samefile(again[1]["stdout"].split(" ")[3].rsplit("/", 1)[0], moved)
