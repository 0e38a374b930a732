"""The agreement of two variants of a service's model, from its comparison records:
``python -m gateway compare`` and ``GET /v1/services/{service}/comparison`` show it.

Records are grouped by their pair of variants (the one that served, the shadow).  With
two variants named, only that pair is kept, oriented as named: differences are the
second minus the first, so the first is the reference.  A request that was shadowed but
not compared (the shadow failed, was cut at ``max_wait_ms`` or skipped) is counted, never
guessed at.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from gateway.config import ConfigError
from gateway.usage import agreement as ag
from gateway.usage.stores import configured_store

DEFAULT_CUTOFF = 15.0  # eosinophils per high-power field: eosinophilic oesophagitis
OUTCOMES = ("ok", "failed", "cut", "skipped")


def since_day(text: str, now: datetime | None = None) -> str:
    """``7d`` (the last seven UTC days, today included), or a day ``YYYY-MM-DD``."""
    now = (now or datetime.now(UTC)).astimezone(UTC)
    found = re.fullmatch(r"(\d{1,4})d", text.strip())
    if found:
        days = int(found.group(1))
        if days < 1:
            raise ValueError("--since counts at least 1 day")
        return (now - timedelta(days=days - 1)).strftime("%Y-%m-%d")
    try:
        return datetime.strptime(text.strip(), "%Y-%m-%d").strftime("%Y-%m-%d")
    except ValueError:
        raise ValueError(f"--since takes 7d or YYYY-MM-DD, got {text!r}") from None


@dataclass
class _Pair:
    a: str
    b: str
    kind: str | None = None
    compares: str | None = None  # "slides" or "images", as the service's kind wrote them
    outcomes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    counts_a: list[float] = field(default_factory=list)
    counts_b: list[float] = field(default_factory=list)
    matched: int = 0
    only_a: int = 0
    only_b: int = 0
    labels_a: list[str] = field(default_factory=list)
    labels_b: list[str] = field(default_factory=list)


def _orient(record: dict[str, Any], wanted: tuple[str, str] | None) -> tuple[str, str, bool] | None:
    """(a, b, swapped): the record's pair as reported, or None when it is not wanted."""
    primary = (record.get("primary") or {}).get("variant")
    shadow = (record.get("shadow") or {}).get("variant")
    if primary is None or shadow is None:
        return None
    if wanted is None:
        return primary, shadow, False
    if (primary, shadow) == wanted:
        return primary, shadow, False
    if (shadow, primary) == wanted:
        return shadow, primary, True
    return None


def _add(pair: _Pair, record: dict[str, Any], swapped: bool) -> None:
    pair.kind = pair.kind or record.get("kind")
    pair.compares = pair.compares or record.get("compares")
    status = (record.get("shadow") or {}).get("status")
    pair.outcomes[status if status in OUTCOMES else "failed"] += 1
    if status != "ok":
        return
    for slide in record.get("slides") or ():
        a, b = slide["primary_count"], slide["shadow_count"]
        only_a, only_b = slide["only_primary"], slide["only_shadow"]
        if swapped:
            a, b, only_a, only_b = b, a, only_b, only_a
        pair.counts_a.append(a)
        pair.counts_b.append(b)
        pair.matched += slide["matched"]
        pair.only_a += only_a
        pair.only_b += only_b
    for image in record.get("images") or ():
        a, b = image["primary_label"], image["shadow_label"]
        if swapped:
            a, b = b, a
        pair.labels_a.append(a)
        pair.labels_b.append(b)


def _r(x: float | None, digits: int = 4) -> float | None:
    return None if x is None else round(x, digits)


def _figures(pair: _Pair, cutoff: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "variants": [pair.a, pair.b],
        "kind": pair.kind,
        "requests": {"shadowed": sum(pair.outcomes.values()), "compared": pair.outcomes["ok"]},
        "shadow": {k: v for k, v in pair.outcomes.items() if k != "ok"},
    }
    if pair.counts_a or pair.compares == "slides":
        a, b = pair.counts_a, pair.counts_b
        ba = ag.bland_altman(a, b)
        crossing = ag.cutoff_crossings(a, b, cutoff)
        out.update(
            slides=len(a),
            counts={
                pair.a: {"mean": _r(ag.mean(a)), "median": ag.median(a)},
                pair.b: {"mean": _r(ag.mean(b)), "median": ag.median(b)},
            },
            bland_altman={
                "bias": _r(ba.bias),
                "sd": _r(ba.sd),
                "lower": _r(ba.lower),
                "upper": _r(ba.upper),
                "outside": ba.outside,
            },
            ccc=_r(ag.lin_ccc(a, b)),
            boxes={
                "matched": pair.matched,
                f"only_{pair.a}": pair.only_a,
                f"only_{pair.b}": pair.only_b,
                "f1": _r(ag.pooled_f1(pair.matched, pair.only_a, pair.only_b)),
            },
            cutoff={
                "value": cutoff,
                "crossings": crossing,
                f"positive_only_{pair.a}": sum(
                    1 for x, y in zip(a, b, strict=True) if x >= cutoff > y
                ),
                f"positive_only_{pair.b}": sum(
                    1 for x, y in zip(a, b, strict=True) if y >= cutoff > x
                ),
            },
        )
    if pair.labels_a or pair.compares == "images":
        a, b = pair.labels_a, pair.labels_b
        out.update(
            images=len(a),
            agreement=_r(ag.agreement_rate(a, b)),
            kappa=_r(ag.cohens_kappa(a, b)),
        )
    return out


@dataclass(frozen=True)
class Comparison:
    """The report, and each pair's counts for the plot."""

    report: dict[str, Any]
    points: dict[tuple[str, str], tuple[list[float], list[float]]]


def compare(
    records: Iterable[dict[str, Any]],
    service: str,
    variants: tuple[str, str] | None = None,
    cutoff: float = DEFAULT_CUTOFF,
    since: str | None = None,
) -> Comparison:
    pairs: dict[tuple[str, str], _Pair] = {}
    for record in records:
        if record.get("service") not in (None, service):
            continue
        if since is not None and str(record.get("day") or "") < since:
            continue
        oriented = _orient(record, variants)
        if oriented is None:
            continue
        a, b, swapped = oriented
        pair = pairs.setdefault((a, b), _Pair(a, b))
        _add(pair, record, swapped)
    if variants is not None and variants not in pairs:
        pairs[variants] = _Pair(*variants)
    report = {
        "service": service,
        "since": since,
        "cutoff": cutoff,
        "pairs": [_figures(p, cutoff) for p in pairs.values()],
    }
    points = {k: (p.counts_a, p.counts_b) for k, p in pairs.items()}
    return Comparison(report, points)


def text(report: dict[str, Any], source: str | None = None) -> str:
    """The report as a person reads it."""
    lines = [f"# {source}"] if source else []
    since = f" since {report['since']}" if report["since"] else ""
    lines.append(f"service {report['service']}{since}")
    if not report["pairs"]:
        lines.append("no comparisons: no request was shadowed")
    for p in report["pairs"]:
        a, b = p["variants"]
        req = p["requests"]
        lines += ["", f"{a} (reference) against {b}"]
        skipped = ", ".join(f"{k} {v}" for k, v in p["shadow"].items())
        lines.append(f"  requests compared   {req['compared']} of {req['shadowed']} ({skipped})")
        if "slides" in p:
            ba, c, bx = p["bland_altman"], p["counts"], p["boxes"]
            lines += [
                f"  slides              {p['slides']}",
                f"  mean count          {a}: {_f(c[a]['mean'])}   {b}: {_f(c[b]['mean'])}",
                f"  median count        {a}: {_f(c[a]['median'])}   {b}: {_f(c[b]['median'])}",
                f"  bias ({b} - {a})     {_f(ba['bias'])}",
                f"  95% limits          {_f(ba['lower'])} to {_f(ba['upper'])}"
                f"   ({ba['outside']} slides outside)",
                f"  Lin's CCC           {_f(p['ccc'])}",
                f"  box F1 (IoU>=0.5)   {_f(bx['f1'])}   matched {bx['matched']}, "
                f"only {a} {bx['only_' + a]}, only {b} {bx['only_' + b]}",
                f"  cross cut-off {p['cutoff']['value']:g}    {p['cutoff']['crossings']} slides",
            ]
        if "images" in p:
            lines += [
                f"  images              {p['images']}",
                f"  agreement           {_f(p['agreement'])}",
                f"  Cohen's kappa       {_f(p['kappa'])}",
            ]
    return "\n".join(lines)


def _f(x: float | None) -> str:
    if x is None:
        return "-"
    return f"{x:.3f}".rstrip("0").rstrip(".") if isinstance(x, float) else str(x)


def plot(comparison: Comparison, path: str) -> None:
    """The Bland-Altman plot of each detection pair: mean of the two counts against their
    difference, the bias and the 95% limits drawn across."""
    try:
        import matplotlib  # a dev and command-line extra: the deployed gateway never needs it
    except ImportError:
        raise SystemExit(
            "--plot needs matplotlib, which this interpreter does not have: "
            "pip install matplotlib (or the dev extra: pip install '.[dev]')"
        ) from None

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    detection = [p for p in comparison.report["pairs"] if "slides" in p]
    if not detection:
        raise ValueError("no detection comparisons to plot")
    fig, axes = plt.subplots(1, len(detection), figsize=(6 * len(detection), 4.5), squeeze=False)
    for ax, p in zip(axes[0], detection, strict=True):
        a, b = p["variants"]
        xs, ys = comparison.points[(a, b)]
        means = [(x + y) / 2 for x, y in zip(xs, ys, strict=True)]
        diffs = [y - x for x, y in zip(xs, ys, strict=True)]
        ax.scatter(means, diffs, s=14, alpha=0.7)
        ba = p["bland_altman"]
        for value, style, label in (
            (ba["bias"], "-", "bias"),
            (ba["upper"], "--", "+1.96 SD"),
            (ba["lower"], "--", "-1.96 SD"),
        ):
            if value is not None:
                ax.axhline(value, linestyle=style, color="grey")
                where = ("axes fraction", "data")
                ax.annotate(
                    f"{label} {value:.2f}", (1.0, value), xycoords=where, ha="right", fontsize=8
                )
        ax.set_xlabel(f"mean count of {a} and {b}")
        ax.set_ylabel(f"{b} - {a}")
        ax.set_title(f"{comparison.report['service']}: {p['slides']} slides")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway compare",
        description="How two variants of a service's model agree, from shadowed requests.",
    )
    parser.add_argument("--service", required=True)
    parser.add_argument("--since", help="7d (the last 7 UTC days) or YYYY-MM-DD; default: all")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="twice: the reference, then the variant compared with it",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--cutoff", type=float, default=DEFAULT_CUTOFF, help="count cut-off")
    parser.add_argument("--plot", metavar="FILE.png", help="draw the Bland-Altman plot")
    args = parser.parse_args(argv)
    if len(args.variant) not in (0, 2) or (args.variant and args.variant[0] == args.variant[1]):
        parser.error("--variant is given twice, with two different variants, or not at all")
    try:
        since = since_day(args.since) if args.since else None
    except ValueError as exc:
        parser.error(str(exc))
    try:
        where, store = configured_store()
        records = [] if store is None else store.comparisons(args.service, since)
        pair = (args.variant[0], args.variant[1]) if args.variant else None
        found = compare(records, args.service, pair, args.cutoff, since)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a person reads this: no stack trace for an unreachable store
        print(f"cannot read comparison records: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if args.plot:
        try:
            plot(found, args.plot)
        except (ImportError, ValueError) as exc:
            print(f"no plot: {exc}", file=sys.stderr)
            return 1
    if args.json:
        print(json.dumps({"source": where, **found.report}, indent=2))
    else:
        print(text(found.report, where))
    return 0
