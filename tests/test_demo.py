"""``fastgrad demo``: trains micrograd's notebook, reports, plots, refuses bad input.

Oracles: the losses micrograd's ``demo.ipynb`` prints with np.random.seed(1337)
and random.seed(1337) (step 2: 0.7429006313851133, step 99:
0.010978370135492717, 100% accuracy), re-run with micrograd 0.1.0 here; and for
mini-batches, micrograd with the notebook's ``loss(batch_size=10)``.
"""
import os
import re
import struct
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
pytest.importorskip("tqdm")

from fastgrad.__main__ import main  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def demo(capsys, *argv):
    rc = main(["demo", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def accuracy(out):
    m = re.search(r"training accuracy ([\d.]+)% \((\d+)/100\)", out)
    assert m, out
    return float(m.group(1))


def final_loss(out):
    m = re.search(r"final loss ([\d.]+) \(last step\)", out)
    assert m, out
    return float(m.group(1))


def test_three_steps_no_plot_reports_accuracy(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = demo(capsys, "--steps", "3", "--no-plot", "--reference-steps", "0")
    assert rc == 0
    assert 0 <= accuracy(out) <= 100
    # micrograd's notebook, step 2: loss 0.7429006313851133
    assert final_loss(out) == pytest.approx(0.742901, abs=1e-6)
    assert re.search(r"3 steps in [\d.]+ s, [\d.]+ ms per step \(fastgrad\)", out)
    assert "training (fastgrad)" in err          # the progress bar
    assert list(tmp_path.iterdir()) == []        # --no-plot writes nothing


def test_full_demo_reaches_notebook_result(capsys):
    rc, out, _ = demo(capsys, "--no-plot", "--reference-steps", "0")
    assert rc == 0
    # micrograd's notebook: step 99 loss 0.010978370135492717, accuracy 100.0%
    assert final_loss(out) == pytest.approx(0.010978, abs=1e-6)
    assert accuracy(out) == 100.0


def test_mini_batches_follow_the_notebook(capsys):
    rc, out, _ = demo(capsys, "--steps", "3", "--batch-size", "10", "--no-plot",
                      "--reference-steps", "0")
    assert rc == 0
    # micrograd, notebook's loss(batch_size=10) for 3 steps: 0.3386608744386...
    assert final_loss(out) == pytest.approx(0.338661, abs=1e-6)
    assert "batches of 10" in out


def png_size(path):
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.endswith(b"IEND\xaeB`\x82")
    return len(data), width, height


def test_plots_written(capsys, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    out_dir = tmp_path / "pictures"          # created on demand
    rc, out, _ = demo(capsys, "--steps", "3", "--out", str(out_dir),
                      "--reference-steps", "0")
    assert rc == 0
    assert sorted(p.name for p in out_dir.iterdir()) == ["decision_boundary.png",
                                                          "loss.png"]
    for name in ("decision_boundary.png", "loss.png"):
        nbytes, width, height = png_size(out_dir / name)
        assert nbytes > 10_000 and width >= 300 and height >= 300
        assert f"wrote {out_dir / name}" in out


def test_failed_write_leaves_nothing(capsys, tmp_path, monkeypatch):
    figure = pytest.importorskip("matplotlib.figure")
    real_savefig = figure.Figure.savefig
    calls = []

    def savefig_then_fail(self, *args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:                  # the disk fills up on the second picture
            raise OSError(28, "No space left on device")
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(figure.Figure, "savefig", savefig_then_fail)
    rc, out, err = demo(capsys, "--steps", "2", "--out", str(tmp_path),
                        "--reference-steps", "0")
    assert rc == 2
    last = err.rstrip("\n").split("\n")[-1]       # after the progress bar
    assert last == (f"fastgrad demo: error: --out {tmp_path}: could not write the "
                    "pictures ([Errno 28] No space left on device)")
    assert len(calls) == 2 and os.path.dirname(calls[0]) == str(tmp_path)
    assert list(tmp_path.iterdir()) == []    # neither the first picture nor temp files


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be a positive integer, got 0"),
    (["--steps", "-3"], "--steps must be a positive integer, got -3"),
    (["--batch-size", "101"], "--batch-size must be between 1 and the 100 data points, got 101"),
    (["--batch-size", "0"], "--batch-size must be between 1 and the 100 data points, got 0"),
    (["--seed", "-1"], "--seed must be between 0 and 2**32 - 1, got -1"),
    (["--reference-steps", "-1"], "--reference-steps must be 0 or more, got -1"),
])
def test_bad_numbers_exit_2(capsys, tmp_path, argv, message):
    rc, out, err = demo(capsys, *argv, "--out", str(tmp_path))
    assert rc == 2
    assert err == f"fastgrad demo: error: {message}\n"
    assert out == ""
    assert list(tmp_path.iterdir()) == []


def test_out_is_a_file_exit_2(capsys, tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    for out_arg in (target, target / "sub"):
        rc, out, err = demo(capsys, "--steps", "2", "--out", str(out_arg))
        assert rc == 2
        assert err.count("\n") == 1 and "is not a directory" in err
        assert out == ""
    assert target.read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["taken"]


def test_out_unwritable_exit_2(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        probe = locked / "probe"
        try:
            probe.write_text("")
        except OSError:
            pass
        else:                         # root ignores permissions
            probe.unlink()
            pytest.skip("running with privileges that ignore directory permissions")
        rc, out, err = demo(capsys, "--steps", "2", "--out", str(locked))
        assert rc == 2 and out == ""
        assert err.startswith(f"fastgrad demo: error: --out {locked}: cannot write there")
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux /proc")
def test_out_in_proc_exit_2(capsys):
    # /proc refuses new files even to root: an unwritable directory anywhere
    rc, out, err = demo(capsys, "--steps", "2", "--out", "/proc/fastgrad-demo-test")
    assert rc == 2 and out == ""
    assert err.startswith("fastgrad demo: error: --out /proc/fastgrad-demo-test: "
                          "cannot write there (")
    assert err.count("\n") == 1
    assert not os.path.exists("/proc/fastgrad-demo-test")


def test_missing_extra_says_what_to_install(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    rc, out, err = demo(capsys, "--steps", "2", "--no-plot")
    assert rc == 2
    assert err == ('fastgrad demo: error: the demo needs scikit-learn: '
                   'pip install "fastgrad[demo]" (from a checkout: '
                   'pip install ".[demo]")\n')


@pytest.mark.compiled_only("--engine compiled replays the graph in C")
def test_compiled_engine_until_replay_lands(capsys):
    try:
        import fastgrad.compiled  # noqa: F401
    except ImportError:
        rc, out, err = demo(capsys, "--engine", "compiled", "--steps", "2", "--no-plot")
        assert rc == 2
        assert "--engine compiled needs fastgrad.compiled" in err
        assert err.count("\n") == 1
    else:
        rc, out, _ = demo(capsys, "--engine", "compiled", "--steps", "3", "--no-plot",
                          "--reference-steps", "0")
        assert rc == 0
        assert final_loss(out) == pytest.approx(0.742901, abs=1e-6)
        # microseconds per step, printed as such (not "0.01 ms")
        assert re.search(r"3 steps in [\d.]+ s, [\d.]+ (us|ms) per step \(compiled\)",
                         out)


def test_reference_engine_same_numbers(capsys):
    pytest.importorskip("fastgrad.reference")
    rc, out, _ = demo(capsys, "--engine", "reference", "--steps", "1", "--no-plot")
    assert rc == 0
    # micrograd's notebook, step 0: loss 0.8958441028683222, accuracy 50%
    assert final_loss(out) == pytest.approx(0.895844, abs=1e-6)
    assert "(reference)" in out


def test_reference_engine_timed_in_same_run(capsys):
    pytest.importorskip("fastgrad.reference")
    rc, out, _ = demo(capsys, "--steps", "2", "--no-plot", "--reference-steps", "1")
    assert rc == 0
    assert re.search(r"reference engine \(pure Python\): [\d.]+ ms per step over "
                     r"1 steps; fastgrad is \d+x faster", out)


def test_reference_missing_is_reported(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastgrad.reference", None)
    rc, out, _ = demo(capsys, "--steps", "1", "--no-plot", "--reference-steps", "1")
    assert rc == 0
    assert "reference engine: not timed (fastgrad.reference is not installed)" in out
    rc, out, err = demo(capsys, "--engine", "reference", "--steps", "1", "--no-plot")
    assert rc == 2 and "--engine reference needs fastgrad.reference" in err


def test_python_dash_m(tmp_path):
    src = os.path.dirname(os.path.dirname(os.path.abspath(
        sys.modules["fastgrad"].__file__)))
    env = dict(os.environ, PYTHONPATH=src, MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-m", "fastgrad", "demo", "--steps", "2", "--no-plot",
         "--reference-steps", "0"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "training accuracy" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "fastgrad", "demo", "--steps", "0"],
                          capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == ("fastgrad demo: error: --steps must be a positive "
                           "integer, got 0\n")
