"""The `asymalign` command line: list, help, version, errors."""

import subprocess
import sys

import pytest

from asymalign import cli


def test_list(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out.splitlines()
    names = [line.split()[0] for line in out]
    assert names == list(cli.load_experiments().EXPERIMENTS)
    assert len(names) == 7


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "reproduce" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        cli.main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("asymalign ")
    with pytest.raises(SystemExit) as e:
        cli.main(["reproduce", "--help"])
    assert "--quick" in capsys.readouterr().out


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("asymalign: error:"), err
    return err[0]


def test_unknown_experiment(capsys, tmp_path):
    assert cli.main(["reproduce", "--only", "nope", "--out", str(tmp_path)]) != 0
    assert "nope" in _one_error_line(capsys)
    assert not any(tmp_path.iterdir())


def test_bad_arguments(capsys):
    assert cli.main(["frobnicate"]) != 0
    _one_error_line(capsys)
    assert cli.main(["reproduce", "--seed", "x"]) != 0
    _one_error_line(capsys)


def test_unwritable_directory(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cli.main(["reproduce", "--quick", "--only", "ldp", "--out", str(blocker / "sub")]) != 0
    assert "cannot write" in _one_error_line(capsys)


def test_missing_experiments_folder(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli, "experiments_dir", lambda: tmp_path / "experiments")
    monkeypatch.delitem(sys.modules, "experiments", raising=False)
    assert cli.main(["list"]) != 0
    assert "experiments folder not found" in _one_error_line(capsys)


def test_console_entry_point_runs():
    # `python -m asymalign.cli` is the same entry point as the `asymalign` script.
    res = subprocess.run([sys.executable, "-m", "asymalign.cli", "list"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "frontier" in res.stdout
