"""What a new user hit in ``fastgrad demo`` (issue 10, item 10).

Labelled decision-boundary picture, nothing partial when an output path is
taken by a directory, a quiet progress report outside a terminal, the demo's
own usage for an unknown option, and a speed line that names its baseline.
"""
import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

from fastgrad.__main__ import main  # noqa: E402

SRC = os.path.dirname(os.path.dirname(os.path.abspath(sys.modules["fastgrad"].__file__)))


def run_cli(args, cwd):
    """``python -m fastgrad ...`` with stdout/stderr captured (so: not a terminal)."""
    env = dict(os.environ, PYTHONPATH=SRC, MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "fastgrad", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def test_directory_in_place_of_a_picture_fails_before_training(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "loss.png").mkdir()
    rc = main(["demo", "--steps", "2", "--out", str(tmp_path), "--reference-steps", "0"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err == (f"fastgrad demo: error: --out {tmp_path}: {tmp_path / 'loss.png'} is a "
                   "directory; cannot write loss.png there\n")
    assert out == ""                                   # refused before training
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loss.png"]
    assert list((tmp_path / "loss.png").iterdir()) == []


def test_directory_appearing_during_training_leaves_nothing(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import fastgrad.demo as demo

    real_train = demo._train

    def train_then_block(*args, **kwargs):
        result = real_train(*args, **kwargs)
        (tmp_path / "decision_boundary.png").mkdir()   # taken while training ran
        return result

    monkeypatch.setattr(demo, "_train", train_then_block)
    rc = main(["demo", "--steps", "2", "--out", str(tmp_path), "--reference-steps", "0"])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.endswith("is a directory; cannot write decision_boundary.png there\n")
    # loss.png was not written either, and no temporary file is left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decision_boundary.png"]


def test_boundary_picture_has_axis_labels_and_legend(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    import fastgrad.demo as demo

    saved = []
    real_savefig = Figure.savefig

    def keep(self, *args, **kwargs):
        saved.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", keep)
    assert main(["demo", "--steps", "2", "--out", str(tmp_path),
                 "--reference-steps", "0"]) == 0
    boundary = saved[0].axes[0]
    assert boundary.get_xlabel().startswith("x[0]")
    assert boundary.get_ylabel().startswith("x[1]")
    legend = boundary.get_legend()
    assert legend is not None
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels == ["class -1", "model says -1", "class +1", "model says +1"]
    # each class's points are drawn in one scatter: 50 + 50 moons points
    sizes = sorted(len(c.get_offsets()) for c in boundary.collections
                   if c.get_label() in ("class -1", "class +1"))
    assert sizes == [50, 50]
    assert demo.PNG_NAMES[0] == "decision_boundary.png"


def test_progress_outside_a_terminal_is_a_few_lines(tmp_path):
    proc = run_cli(["demo", "--steps", "100", "--no-plot", "--reference-steps", "0"],
                   tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    # one line per quarter of the run, no carriage-return redraws (tqdm wrote 114)
    assert "\r" not in proc.stderr
    pattern = re.compile(r"training \(fastgrad\): step (\d+)/100, loss [\d.]+, acc \d+%")
    matches = [pattern.fullmatch(line) for line in lines]
    assert all(matches), lines
    assert [int(m.group(1)) for m in matches] == [25, 50, 75, 100]
    assert lines[-1].endswith("acc 100%")        # the notebook's final accuracy


def test_report_steps_for_short_runs():
    from fastgrad.demo import _report_steps
    assert _report_steps(1) == {1}
    assert _report_steps(3) == {1, 2, 3}
    assert _report_steps(100) == {25, 50, 75, 100}


def test_unknown_option_prints_the_demos_usage(tmp_path):
    proc = run_cli(["demo", "--bogus"], tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("usage: fastgrad demo [-h] [--steps STEPS]")
    assert proc.stderr.endswith("fastgrad demo: error: unrecognized arguments: --bogus\n")


def test_unknown_top_level_option_prints_the_top_usage(tmp_path):
    proc = run_cli(["--bogus"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage: fastgrad [-h] [--version] COMMAND ...")
    assert proc.stderr.endswith("fastgrad: error: unrecognized arguments: --bogus\n")


def test_speed_line_names_its_baseline(capsys):
    pytest.importorskip("fastgrad.reference")
    assert main(["demo", "--steps", "2", "--no-plot", "--reference-steps", "1"]) == 0
    out = capsys.readouterr().out
    line = [x for x in out.splitlines() if "faster" in x]
    assert len(line) == 1
    assert ("x faster than fastgrad's pure-Python reference engine "
            "(fastgrad.reference), both timed in this run") in line[0]


def test_existing_pictures_are_replaced(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    for name in ("decision_boundary.png", "loss.png"):
        (tmp_path / name).write_text("old")
    assert main(["demo", "--steps", "2", "--out", str(tmp_path), "--reference-steps", "0"]) == 0
    for name in ("decision_boundary.png", "loss.png"):
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["decision_boundary.png", "loss.png"]
