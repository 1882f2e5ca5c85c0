"""The detector on real confocal images (DIADEM gold traces: every flag is a false alert)."""

from pathlib import Path

import pytest

from neurorecon.detect import benchmark_real as br
from neurorecon.detect.model import load_detector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HAVE_DIADEM = (DATA / "lm_real" / "diadem_opf" / "OP_3.tif").is_file()
needs_diadem = pytest.mark.skipif(not HAVE_DIADEM, reason="the shared DIADEM stacks are not on this machine")


def test_calibration_and_report_stacks_are_disjoint_and_cover_all():
    assert not set(br.CALIBRATION_STACKS) & set(br.REPORT_STACKS)
    assert set(br.CALIBRATION_STACKS) | set(br.REPORT_STACKS) == set(br.DIADEM_STACKS)


@needs_diadem
def test_one_stack_reports_a_flag_rate_over_all_its_gold_nodes():
    from neurorecon.io.swc import read_swc

    det = load_detector()
    r = br.run_stack("OP_3", det, data_dir=DATA)
    assert r.n == len(read_swc(DATA / "lm_real" / "diadem_opf" / "OP_3.swc"))
    assert 0 <= r.flagged <= r.n and sum(r.reasons.values()) == r.flagged
    # A stricter threshold can only flag fewer of the same nodes.
    strict = br.run_stack("OP_3", det, threshold=0.9, data_dir=DATA)
    assert strict.flagged <= r.flagged
    md = br.markdown([r], br.heldout_targets(det.meta), "cmd")
    assert f"| OP_3 | report | {r.n} | {r.flagged} |" in md


def test_heldout_targets_from_precision_and_recall_match_the_confusion_counts():
    # 100 error nodes, 80 found; 20 false alerts among 900 correct nodes -> precision 0.8, 2.22 % flagged.
    meta = {"heldout": {"all": {"n": 1000, "n_errors": 100, "recall": 0.8, "precision": 0.8, "auc": 0.9,
                                "recall_at_fpr": 0.7, "per_type": {"jump": [10, 0.5, 0.4]}}}}
    t = br.heldout_targets(meta)
    assert t["correct_flagged"] == pytest.approx(20 / 900)
    assert t["jump_recall_at_fpr"] == 0.4
    assert br.heldout_targets({}) == {}


def test_missing_data_is_one_line_and_exit_1(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEURORECON_DATA", str(tmp_path))
    assert br.main(["--stacks", "OP_3"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "OP_3" in err
