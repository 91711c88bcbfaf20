"""`lowpower bench recipes` reads STUDY/<arm>/seed<k>/ run folders into one table: final val Dice over
seeds, differences to the baseline paired by seed, s/epoch from a clock a resume may restart."""
import json
import statistics

import pytest

from lowpower.measure.recipes import collect, main, seconds_per_epoch, table
from lowpower.safe import UserError
from lowpower.safe.write import OutputError

EPOCHS = 4


def write_run(folder, seed, dices, seconds, epochs=EPOCHS):
    """A run folder: validation on epochs 2 and 4, ``dices`` the mean Dice of those, ``seconds`` the clock."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("model:\n  arch: unet\ntrain:\n  epochs: %d\n  seed: %d\n" % (epochs, seed))
    history = []
    for epoch, clock in enumerate(seconds, start=1):
        record = {"epoch": epoch, "loss": 1.0 / epoch, "seconds": clock}
        if epoch % 2 == 0:
            record.update(mean_dice=dices[epoch // 2 - 1], miou=dices[epoch // 2 - 1] - 0.05)
        history.append(record)
    (folder / "history.json").write_text(json.dumps(history))
    (folder / "log.txt").write_text("done\n")


@pytest.fixture
def study(tmp_path):
    even = [10.0, 20.0, 30.0, 40.0]
    write_run(tmp_path / "baseline" / "seed0", 0, [0.71, 0.70], even)  # best (0.71) is not the final
    write_run(tmp_path / "baseline" / "seed1", 1, [0.60, 0.72], even)
    write_run(tmp_path / "baseline" / "seed2", 2, [0.60, 0.74], even)
    write_run(tmp_path / "wide" / "seed0", 0, [0.70, 0.75], even)
    write_run(tmp_path / "wide" / "seed1", 1, [0.99, 0.99], [10.0, 20.0, 30.0])  # stopped after 3 of 4 epochs
    write_run(tmp_path / "wide" / "seed2", 2, [0.70, 0.77], even)
    (tmp_path / "wide" / "seed3").mkdir()  # a run that never wrote its history
    write_run(tmp_path / "lr_high" / "seed0", 0, [0.60, 0.69], [11.0, 22.0, 33.0, 44.0])  # no seed1 at all
    write_run(tmp_path / "lr_high" / "seed2", 2, [0.60, 0.71], [10.0, 30.0, 5.0, 20.0])  # resumed after epoch 2
    (tmp_path / "notes").mkdir()  # no seed folders: not an arm
    return tmp_path


def test_the_seconds_per_epoch_survive_a_restarted_clock():
    # steps 10, 20, (5 - 30 < 0: dropped), 15 -> median 15; keeping the negative step would give 12.5,
    # the last clock over the epochs 5
    assert seconds_per_epoch([{"seconds": s} for s in (10.0, 30.0, 5.0, 20.0)]) == 15.0
    assert seconds_per_epoch([{"seconds": 7.0}]) == 7.0  # the first epoch's clock is its own duration
    assert seconds_per_epoch([]) is None


def test_collect_keeps_the_finished_runs_and_names_the_rest(study):
    results, warnings = collect(study)
    assert sorted(results) == ["baseline", "lr_high", "wide"]
    assert sorted(results["baseline"]) == [0, 1, 2]
    assert sorted(results["wide"]) == [0, 2] and sorted(results["lr_high"]) == [0, 2]
    base0 = results["baseline"][0]
    assert (base0["final"], base0["best"], base0["epochs"], base0["s_per_epoch"]) == (0.70, 0.71, 4, 10.0)
    assert results["lr_high"][2]["s_per_epoch"] == 15.0 and results["lr_high"][0]["s_per_epoch"] == 11.0
    text = "\n".join(warnings)
    assert str(study / "wide" / "seed1") + ": left out: unfinished: 3 of 4 epochs" in warnings
    assert str(study / "wide" / "seed3") + ": left out: no history.json" in warnings
    assert "lr_high: no seed1 folder (another arm has one)" in warnings
    assert "baseline: no seed3 folder" in text and "lr_high: no seed3 folder" in text
    assert len(warnings) == 5, warnings


def test_the_table_pairs_the_differences_by_seed(study):
    results, _ = collect(study)
    lines = table(results).splitlines()
    assert lines[0].startswith("| arm | seeds | val mean Dice (final), mean ± std | difference to baseline by seed")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| baseline", "| lr_high", "| wide"]
    # by hand: baseline 0.70 0.72 0.74 -> 0.7200 ± 0.0200; wide 0.75 . 0.77 -> differences +0.05 +0.03
    assert lines[2] == "| baseline | 0, 1, 2 | 0.7200 ± 0.0200 | — | — | 10.00 |"
    assert lines[4] == "| wide | 0, 2 | 0.7600 ± 0.0141 | seed0 +0.0500, seed2 +0.0300 | +0.0400 ± 0.0141 | 10.00 |"
    # lr_high: 0.69 . 0.71 against 0.70 . 0.74: -0.01 and -0.03; s/epoch the median of 11 and 15
    assert lines[3] == "| lr_high | 0, 2 | 0.7000 ± 0.0141 | seed0 -0.0100, seed2 -0.0300 | -0.0200 ± 0.0141 | 13.00 |"
    assert statistics.stdev([0.05, 0.03]) == pytest.approx(0.0141421, abs=1e-6)
    ordered = table(results, order=["wide", "lr_high"]).splitlines()
    assert [line.split(" | ")[0] for line in ordered[2:]] == ["| baseline", "| wide", "| lr_high"]


def test_one_seed_has_no_std_and_another_baseline_is_compared_to(study):
    results, _ = collect(study)
    one = {"baseline": {0: results["baseline"][0]}, "wide": {0: results["wide"][0]}}
    assert table(one).splitlines()[3] == "| wide | 0 | 0.7500 ± n/a | seed0 +0.0500 | +0.0500 ± n/a | 10.00 |"
    rows = table(results, baseline="wide").splitlines()
    assert rows[2].startswith("| wide | 0, 2 | 0.7600 ± 0.0141 | — | — |")
    assert "| baseline | 0, 1, 2 | 0.7200 ± 0.0200 | seed0 -0.0500, seed2 -0.0300 | -0.0400 ± 0.0141 |" in rows[3]
    with pytest.raises(UserError, match="--baseline"):
        table(results, baseline="nope")
    with pytest.raises(UserError, match="nope"):
        table(results, order=["nope"])


def test_the_table_file_is_written_once_and_replaced_only_with_force(study, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("out") / "study.md"
    assert main([str(study), "--md", str(out), "--order", "wide,lr_high"]) == 0
    captured = capsys.readouterr()
    assert out.read_text() == captured.out and captured.out.splitlines()[3].startswith("| wide |")
    assert "unfinished: 3 of 4 epochs" in captured.err and "lr_high: no seed1 folder" in captured.err
    out.write_text("kept\n")
    with pytest.raises(OutputError, match="--force"):
        main([str(study), "--md", str(out)])
    assert out.read_text() == "kept\n"
    assert main([str(study), "--md", str(out), "--force"]) == 0
    assert out.read_text().splitlines()[3].startswith("| lr_high |")
