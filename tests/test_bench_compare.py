"""lowpower.measure.bench compare and pareto on tiny hand-made packages (no torch in them: fast)."""
import csv
from pathlib import Path

import pytest

from lowpower.cli import main as lowpower_main
from lowpower.measure import compare as bench_compare
from lowpower.measure import pareto as bench_pareto
from tests.conftest import make_pyz

# Writes the GT beside IMG back (perfect) or zeros, sleeps, logs its name, prints a fixed "model time".
PROGRAM = '''
import argparse, os, time
import cv2
parser = argparse.ArgumentParser()
parser.add_argument("-i", required=True)
parser.add_argument("-o", required=True)
args = parser.parse_args()
with open(LOG, "a") as log:
    log.write(NAME + "\\n")
gt_dir = os.path.join(os.path.dirname(os.path.abspath(args.i)), "GT")
os.makedirs(args.o, exist_ok=True)
time.sleep(SLEEP)
for name in sorted(os.listdir(args.i)):
    label = cv2.imread(os.path.join(gt_dir, name), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(os.path.join(args.o, name), label if PERFECT else label * 0)
if FAIL:
    raise SystemExit("out of memory, say")
print(SECONDS)
'''


def make_logging_pyz(folder, name, log, seconds="0.100000", sleep=0.0, perfect=True, fail=False):
    source = PROGRAM
    for key, value in (("LOG", repr(str(log))), ("NAME", repr(name)), ("SLEEP", repr(sleep)),
                       ("PERFECT", repr(perfect)), ("FAIL", repr(fail)), ("SECONDS", repr(seconds))):
        source = source.replace(key, value)
    return make_pyz(folder, name, source)


@pytest.fixture()
def packages(tmp_path):
    log = tmp_path / "order.log"
    fast = make_logging_pyz(tmp_path, "fast", log, seconds="0.100000", perfect=True)
    slow = make_logging_pyz(tmp_path, "slow", log, seconds="0.200000", sleep=0.3, perfect=False)
    return fast, slow, log


def test_compare_runs_in_turns_and_prints_ratios(packages, gt_samples, capsys):
    fast, slow, log = packages
    status = lowpower_main(["bench", "compare", str(fast), str(slow), "--images", str(gt_samples), "-n", "3"])
    text = capsys.readouterr().out
    assert status == 0, text
    # the packages themselves recorded the order they ran in
    assert log.read_text().split() == ["fast", "slow"] * 3
    model = next(line for line in text.splitlines() if line.startswith("model s"))
    assert model.split()[-5:] == ["0.100", "0.200", "2.000", "2.000", "2.000"]  # printed 0.2 / 0.1
    wall = next(line for line in text.splitlines() if line.startswith("wall s"))
    assert float(wall.split()[-3]) > 1.0  # B sleeps 0.3 s more: every turn's ratio is above 1
    assert "mean Dice A: 1.0000" in text
    assert "mean Dice B: 0." in text and "in turns A B A B" in text


def test_compare_pairs_ratios_by_turn(tmp_path, gt_samples):
    """Ratios are B's run i over A's run i, in the order run (a stand-in runner counts the calls)."""
    calls = []

    class Run:
        def __init__(self, wall):
            self.timed_out, self.exit_code, self.wall_seconds = False, 0, wall
            self.stdout, self.peak_memory = "{:.6f}\n".format(wall / 2), 100 * (len(calls))

    def runner(pyz, images, out, timeout=None):
        calls.append(Path(pyz).name)
        Path(out).mkdir(parents=True, exist_ok=True)
        return Run(float(len(calls)))  # walls 1 2 3 4: ratios 2/1 and 4/3

    result = bench_compare.compare("a.pyz", "b.pyz", gt_samples / "IMG", None, runs=2, workdir=tmp_path,
                                   runner=runner, progress=False)
    assert calls == ["a.pyz", "b.pyz", "a.pyz", "b.pyz"] and result["order"] == ["A", "B", "A", "B"]
    assert result["ratios"]["wall"] == pytest.approx([2.0, 4 / 3])
    assert result["ratios"]["model"] == pytest.approx([2.0, 4 / 3])
    assert result["ratios"]["peak"] == pytest.approx([2.0, 4 / 3])
    assert result["dice"] == {"A": None, "B": None}
    assert "n/a (no GT)" in bench_compare.report(result)


def test_a_failing_package_is_a_one_line_error_naming_it(tmp_path, gt_samples, capsys):
    log = tmp_path / "order.log"
    good = make_logging_pyz(tmp_path, "good", log)
    broken = make_logging_pyz(tmp_path, "broken", log, fail=True)
    status = lowpower_main(["bench", "compare", str(good), str(broken), "--images", str(gt_samples), "-n", "3"])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""  # nothing compared
    lines = captured.err.strip().splitlines()
    error = [line for line in lines if line.startswith("compare failed:")]
    assert len(error) == 1 and "broken.pyz" in error[0] and "exit status 1" in error[0], captured.err
    assert log.read_text().split() == ["good", "broken"]  # stopped at the first failure


def test_a_package_that_prints_no_float_fails(tmp_path, gt_samples):
    chatty = make_logging_pyz(tmp_path, "chatty", tmp_path / "log", seconds="'took 0.1 s'")
    with pytest.raises(bench_compare.CompareError, match="chatty.pyz: stdout is not one float"):
        bench_compare.run_figures(chatty, gt_samples / "IMG", tmp_path / "out")


@pytest.mark.parametrize("points, expected", [
    ([(0.5, 10.0), (0.6, 20.0), (0.4, 15.0), (0.6, 25.0)], [True, True, False, False]),
    ([(0.5, 10.0), (0.5, 10.0)], [True, True]),  # equal points: neither dominates
    ([(0.5, 10.0), (0.5, 12.0), (0.4, 10.0)], [True, False, False]),  # ties on one axis are dominated
    ([(0.9, 5.0), (0.1, 1.0), (0.5, 3.0)], [True, True, True]),
    ([(0.7, 1.0), (0.1, 9.0), (0.6, 2.0)], [True, False, False]),
    ([], []),
])
def test_pareto_front(points, expected):
    assert bench_pareto.pareto_front(points) == expected


def test_pareto_writes_csv_png_and_table(tmp_path, gt_samples, capsys):
    log = tmp_path / "order.log"
    fast_bad = make_logging_pyz(tmp_path, "fast_bad", log, seconds="0.100000", perfect=False)
    slow_good = make_logging_pyz(tmp_path, "slow_good", log, seconds="0.400000", perfect=True)
    slower_bad = make_logging_pyz(tmp_path, "slower_bad", log, seconds="0.800000", perfect=False)
    out = tmp_path / "pareto"
    status = lowpower_main(["bench", "pareto", str(fast_bad), str(slow_good), str(slower_bad),
                            "--images", str(gt_samples), "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 0, text
    assert (out / "pareto.png").stat().st_size > 1000
    with open(out / "pareto.csv", newline="") as handle:
        rows = {row["name"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["fast_bad", "slow_good", "slower_bad"]
    assert float(rows["fast_bad"]["ms_per_image"]) == pytest.approx(50.0)  # 0.1 s over 2 images
    assert float(rows["slow_good"]["mean_dice"]) == pytest.approx(1.0)
    assert [rows[name]["frontier"] for name in rows] == ["True", "True", "False"]
    table = [line.split() for line in text.splitlines()[1:4]]
    assert [line[0] for line in table] == ["fast_bad", "slow_good", "slower_bad"]  # fastest first
    assert [line[-1] for line in table[:2]] == ["*", "*"]


def test_pareto_packages_checkpoints_first(tmp_path, gt_samples):
    """A run folder and a .pt go through build_package(ckpt, pyz, verify=False); a .pyz does not."""
    log = tmp_path / "order.log"
    ready = make_logging_pyz(tmp_path, "ready", log)
    (tmp_path / "run1").mkdir()
    (tmp_path / "run1" / "best.pt").write_bytes(b"")
    (tmp_path / "other.pt").write_bytes(b"")
    built = []

    def build(checkpoint, output, verify=True, build_dir=None):
        built.append((Path(checkpoint).name, verify))
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_bytes(ready.read_bytes())

    rows = bench_pareto.pareto([tmp_path / "run1", tmp_path / "other.pt", ready], gt_samples / "IMG", gt_samples / "GT",
                               tmp_path / "out", build=build, progress=False)
    assert built == [("best.pt", False), ("other.pt", False)]
    assert [row["name"] for row in rows] == ["run1", "{}/other".format(tmp_path.name), "ready"]
    with pytest.raises(bench_compare.CompareError, match="no such package"):
        bench_pareto.resolve_package(tmp_path / "missing.pyz", tmp_path, build)


def test_pareto_unpackable_checkpoint_is_one_line(tmp_path, gt_samples, capsys):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    status = lowpower_main(["bench", "pareto", str(tmp_path / "junk.pt"), "--images", str(gt_samples),
                         "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("pareto failed:")]
    assert status == 2 and len(err) == 1 and "junk.pt" in err[0], err
