"""The comparison report: records grouped by pair, oriented as asked, figures against
hand-computed values, and the command line over a SQLite store."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from gateway.usage.comparison import compare, main, since_day
from gateway.usage.records import UsageRecord
from gateway.usage.sqlite_store import SQLiteStore

A = [10, 20, 30, 40, 50]  # the reference's counts of five slides
B = [12, 18, 33, 41, 56]  # the candidate's: differences 2, -2, 3, 1, 6


def detection(i: int, a: int, b: int, primary="current", shadow="candidate", day="2026-12-01"):
    """One shadowed request of one slide: ``a`` by ``primary``, ``b`` by ``shadow``; all but
    2 of the smaller count matched."""
    matched = min(a, b) - 2
    return {
        "request_id": f"r{i}",
        "service": "eos",
        "day": day,
        "kind": "detection",
        "compares": "slides",
        "primary": {"variant": primary},
        "shadow": {"variant": shadow, "status": "ok"},
        "slides": [
            {
                "primary_count": a,
                "shadow_count": b,
                "difference": b - a,
                "matched": matched,
                "only_primary": a - matched,
                "only_shadow": b - matched,
            }
        ],
    }


def records() -> list[dict]:
    out = [detection(i, a, b) for i, (a, b) in enumerate(zip(A, B, strict=True))]
    out.append({**detection(9, 0, 0), "shadow": {"variant": "candidate", "status": "cut"}})
    out.append({**detection(8, 0, 0), "shadow": {"variant": "candidate", "status": "failed"}})
    return out


def test_detection_figures_by_hand():
    (pair,) = compare(records(), "eos").report["pairs"]
    assert pair["variants"] == ["current", "candidate"]
    assert pair["requests"] == {"shadowed": 7, "compared": 5}
    assert pair["shadow"] == {"failed": 1, "cut": 1, "skipped": 0}
    assert pair["slides"] == 5
    assert pair["counts"]["current"] == {"mean": 30.0, "median": 30}
    assert pair["counts"]["candidate"] == {"mean": 32.0, "median": 33}
    sd = math.sqrt(8.5)
    ba = pair["bland_altman"]
    assert ba["bias"] == 2.0 and ba["outside"] == 0
    assert ba["lower"] == pytest.approx(2 - 1.96 * sd, abs=1e-4)
    assert ba["upper"] == pytest.approx(2 + 1.96 * sd, abs=1e-4)
    assert pair["ccc"] == pytest.approx(444 / 454.8, abs=1e-4)
    # matched: 8 + 16 + 28 + 38 + 48 = 138; only each side: 2 per slide plus the surplus
    # current: 2+4+2+2+2 = 12, candidate: 4+2+5+3+8 = 22; F1 = 276 / (276 + 34)
    assert pair["boxes"] == {
        "matched": 138,
        "only_current": 12,
        "only_candidate": 22,
        "f1": round(276 / 310, 4),
    }
    assert pair["cutoff"]["crossings"] == 0


def test_the_named_pair_is_oriented_as_named():
    pairs = enumerate(zip(A, B, strict=True))
    flipped = [detection(i, b, a, "candidate", "current") for i, (a, b) in pairs]
    (pair,) = compare(flipped, "eos", ("current", "candidate")).report["pairs"]
    assert pair["variants"] == ["current", "candidate"]
    assert pair["bland_altman"]["bias"] == 2.0
    assert pair["boxes"]["only_current"] == 12
    (other,) = compare(flipped, "eos", ("candidate", "current")).report["pairs"]
    assert other["bland_altman"]["bias"] == -2.0


def test_cutoff_crossings_at_the_clinical_cutoff():
    recs = [detection(0, 14, 16), detection(1, 15, 14), detection(2, 30, 40), detection(3, 3, 4)]
    (pair,) = compare(recs, "eos", cutoff=15).report["pairs"]
    assert pair["cutoff"]["crossings"] == 2
    assert pair["cutoff"]["positive_only_candidate"] == 1
    assert pair["cutoff"]["positive_only_current"] == 1


def test_classification_agreement_and_kappa():
    a = ["yes"] * 5 + ["no"] * 5
    b = ["yes"] * 4 + ["no"] + ["yes"] * 2 + ["no"] * 3
    recs = [
        {
            "request_id": f"c{i}",
            "service": "tissue",
            "day": "2026-12-01",
            "kind": "classification",
            "compares": "images",
            "primary": {"variant": "v1"},
            "shadow": {"variant": "v2", "status": "ok"},
            "images": [{"primary_label": x, "shadow_label": y}],
        }
        for i, (x, y) in enumerate(zip(a, b, strict=True))
    ]
    (pair,) = compare(recs, "tissue").report["pairs"]
    assert (pair["images"], pair["agreement"], pair["kappa"]) == (10, 0.7, 0.4)


def test_since():
    now = datetime(2026, 12, 8, 5, 0, tzinfo=UTC)
    assert since_day("7d", now) == "2026-12-02"
    assert since_day("1d", now) == "2026-12-08"
    assert since_day("2026-11-30", now) == "2026-11-30"
    with pytest.raises(ValueError):
        since_day("last week", now)
    recs = [detection(0, 1, 1, day="2026-11-01"), detection(1, 1, 2, day="2026-12-05")]
    (pair,) = compare(recs, "eos", since="2026-12-02").report["pairs"]
    assert pair["slides"] == 1


def stored(tmp_path, monkeypatch) -> None:
    """The records in a SQLite store that ``GATEWAY_CONFIG`` names."""
    db = tmp_path / "usage.db"
    store = SQLiteStore(db)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    for rec in records():
        usage = UsageRecord(rec["request_id"], now, "key:lab", "eos", {"day": "2026-12-01"},
                            {"requests": 1}, comparison=rec)  # fmt: skip
        assert store.commit(usage)
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({"usage": {"store": "sqlite", "sqlite": {"path": str(db)}}}))
    monkeypatch.setenv("GATEWAY_CONFIG", str(config))


def test_the_command_line_reads_the_store(tmp_path, monkeypatch, capsys):
    stored(tmp_path, monkeypatch)
    assert main(["--service", "eos", "--json", "--since", "2026-11-01"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pairs"][0]["bland_altman"]["bias"] == 2.0
    assert main(["--service", "eos", "--variant", "current", "--variant", "candidate"]) == 0
    printed = capsys.readouterr().out
    assert "requests compared   5 of 7" in printed
    assert "(0 slides outside)" in printed
    with pytest.raises(SystemExit):
        main(["--service", "eos", "--variant", "current"])


@pytest.mark.process  # matplotlib asks fc-list for the fonts when first imported
def test_the_command_line_draws_the_bland_altman_plot(tmp_path, monkeypatch, capsys):
    stored(tmp_path, monkeypatch)
    plot = tmp_path / "ba.png"
    assert main(["--service", "eos", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
