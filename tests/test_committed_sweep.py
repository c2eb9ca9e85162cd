"""The committed sweep's grid: run names, order, what counts as committed, and bad --grid input."""

from __future__ import annotations

import json

import pytest

from normlab.committed_sweep import Job, committed, grid_jobs, main, parse_grid
from normlab.errors import UserError


def test_grid_names_sort_keys_and_first_key_varies_slowest():
    jobs = grid_jobs(parse_grid(["seed=0,1", "norm=ln,bn"]))
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
