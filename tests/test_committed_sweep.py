"""The committed sweep's grid and variants: run names, order, what counts as committed, and bad
--grid / --variant input. (That --variant names equal normlab.run_dir's: tests/test_bn_variants.py.)"""

from __future__ import annotations

import json

import pytest

from normlab.committed_sweep import Job, all_jobs, committed, grid_jobs, main, parse_grid
from normlab.errors import UserError


def test_grid_names_sort_keys_and_first_key_varies_slowest():
    jobs = grid_jobs(parse_grid(["seed=0,1", "norm=ln,bn"]), "multi30k_transformer", "smoke")
    assert [j.name for j in jobs] == [
        "norm=ln,seed=0",
        "norm=bn,seed=0",
        "norm=ln,seed=1",
        "norm=bn,seed=1",
    ]
    assert jobs[1].overrides == ("norm=bn", "seed=0")


@pytest.mark.parametrize(
    ("spec", "words"),
    [("norm", "not KEY=V1,V2"), ("norm=", "not KEY=V1,V2"), ("norm=ln,,bn", "not KEY=V1,V2")],
)
def test_bad_grid_is_one_sentence(spec, words, capsys):
    assert main(["multi30k_transformer", "--scale", "smoke", "--grid", spec]) == 2
    err = capsys.readouterr().err
    assert words in err and spec in err and "--grid norm=ln,bn,pnv,pn" in err
    assert err.count("\n") == 1


def test_variants_follow_the_grid_each_one_run():
    jobs = all_jobs(
        ["seed=0,1"],
        ["norm=bn norm.momentum=0.05", "norm=bn_official"],
        "iwslt14_transformer",
        "cpu",
    )
    names = " ".join(j.name for j in jobs)
    assert names == "seed=0 seed=1 norm.momentum=0.05,norm=bn norm=bn_official"
    assert jobs[2].overrides == ("norm=bn", "norm.momentum=0.05")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give the runs with --grid"),
        (["--variant", ""], "is not a list of KEY=VALUE overrides"),
        (["--variant", "norm=bn seed"], "is not a list of KEY=VALUE overrides"),
        (["--variant", "norm=bn seed=1", "--variant", "seed=1 norm=bn"], "asked for twice"),
        (["--variant", "norm=bnx"], "unknown norm 'bnx'"),
        (["--variant", "norm=bn norm.no_such_key=1"], "norm.no_such_key"),
    ],
)
def test_bad_variants_are_one_sentence(args, words, capsys):
    assert main(["iwslt14_transformer", "--scale", "smoke", *args]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1


def test_a_key_twice_is_refused():
    with pytest.raises(UserError, match="twice"):
        parse_grid(["seed=0", "seed=1"])


def test_only_a_complete_summary_counts_as_committed(tmp_path):
    job = Job("norm=ln,seed=0", ("norm=ln", "seed=0"))
    assert not committed(job, tmp_path)
    (tmp_path / job.name).mkdir()
    (tmp_path / job.name / "summary.json").write_text(json.dumps({"status": "diverged"}))
    assert not committed(job, tmp_path)
    (tmp_path / job.name / "summary.json").write_text(json.dumps({"status": "complete"}))
    assert committed(job, tmp_path)
