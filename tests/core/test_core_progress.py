"""The progress helper: bars for a person, one plain line per finished loop otherwise."""

from __future__ import annotations

import pytest

from mrl_analysis.core.progress import PROGRESS_ENV, progress, progress_mode, progress_write


def test_log_mode_writes_one_line_per_finished_loop(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "log")
    assert list(progress(range(4), desc="5-NN · MRL", unit="batch", leave=True)) == [0, 1, 2, 3]
    for _ in progress(range(4), desc="inner · MRL"):  # leave=False: leaves nothing
        pass
    with progress(total=10, desc="embed · FF-8", unit="img", leave=True) as bar:
        bar.update(4)
    progress_write("epoch 1: done")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("5-NN · MRL: 4/4 batch in 00:0")
    assert err[1].startswith("embed · FF-8: stopped at 4/10 img in 00:0")
    assert err[2:] == ["epoch 1: done"]
    assert "%" not in "".join(err)  # no bar was drawn


def test_off_mode_is_silent(monkeypatch, capsys):
    monkeypatch.setenv(PROGRESS_ENV, "off")
    assert sum(progress(range(3), desc="x", leave=True)) == 3
    progress_write("nothing")
    assert capsys.readouterr() == ("", "")


def test_bar_mode_is_tqdm_auto_named_by_desc(monkeypatch, capsys):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert progress_mode() == "bar"
    for _ in progress(range(2), desc="router splits · MRL", leave=True):
        pass
    assert "router splits · MRL: 100%" in capsys.readouterr().err
    with pytest.raises(TypeError):
        progress(range(2))  # desc is required: a bar must say what it counts


def test_an_unknown_mode_is_named(monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "bars")
    with pytest.raises(ValueError, match="MRL_PROGRESS='bars' is not a progress mode.*bar, log"):
        progress(range(2), desc="x")
