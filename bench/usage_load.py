"""Load simulation of usage recording: a fleet of gateway processes on one Firestore emulator.

    .venv/bin/python -m bench.usage_load [--instances 4] [--clients 16] [--requests 15]

Each gateway process is a separate instance (its own working directory and spool) and all
clients call as one principal, the busy-caller case.  It reports:

- quota: clients send until refused under a daily quota of 60; served against the quota
  (overshoot), records and counters complete;
- latency: the same traffic with usage recording off and on (records, sharded counters,
  daily-image allowances and a request rate), interleaved, p50/p95 and what recording adds;
- writes: the highest number of writes in one second to any one document (counter shards
  from each record's server time and its shard, ledger entries), against what one unsharded
  daily document would have taken;
- a ledger simulation at ``--simulate`` instances (100): that many quota accountants in
  this process, one client each, on one principal's daily ledger: overshoot, allowance left
  unused, write attempts on one ledger entry, requests asked to retry after losing appends,
  store calls past their deadline (a gateway serves those requests unchecked, as in an
  outage; the clients here wait a second instead).

The stub TF Serving backend (bench/stub_backend.py) answers after 20 ms, so the figures are
about the gateway and its usage store, not a model.  Writes ``bench/results/usage-<time>.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import threading
import time
from collections import Counter

from bench.common import (
    ROOT,
    FirestoreEmulator,
    daily_counters,
    jpeg,
    make_slide,
    run_clients,
    save_results,
    sha,
    start_gateway,
    start_stub,
    today,
)
from bench.run import machine
from gateway.catalog import parse_config
from gateway.usage.allowance import SPREAD, Allowances, Contention, part_names, parts
from gateway.usage.firestore_store import FirestoreStore, shard_of
from gateway.usage.records import ledger_id
from gateway.usage.settings import usage_settings
from gateway.usage.stores import StoreUnavailable

KEY = "bench-usage-key-7c1d"
PRINCIPAL = "key:lab-script"
QUOTA = 60


def _jpeg() -> bytes:
    return jpeg(make_slide(200, 150, [(60, 60, 36), (140, 90, 38)], seed=5), quality=90)


def _config(stub_url: str, usage: bool, quotas: dict | None) -> dict:
    config: dict = {
        "services": {"eos": {"backend": {"url": stub_url, "model": "eos", "timeout_s": 30}}},
        "auth": {
            "required": True,
            "api_keys": [{"id": "lab-script", "sha256": sha(KEY)}],
            "api_keys_firestore": False,
        },
        "usage": {"enabled": usage},
    }
    if quotas is not None:
        config["quotas"] = quotas
    return config


def _fleet(n: int, config: dict, env: dict) -> list:
    fleet = [start_gateway(config, env=env | {"WORKERS": "1"}, start=False) for _ in range(n)]
    for gw in fleet:
        gw.start()
    return fleet


def _pct(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(pct / 100 * len(ordered))) - 1]


def _utc(t: float, fmt: str) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)


def _writes(client, answers, shards: int) -> dict:
    """Writes per document per second, from what the store holds after a run."""
    docs = {s.id: s.to_dict() for s in client.collection("usage").stream()}
    ids = [a.request_id for a in answers if a.request_id in docs]
    per_shard: Counter = Counter()
    per_day_doc: Counter = Counter()
    for rid in ids:
        second = int(docs[rid]["ts"].timestamp())
        per_shard[(shard_of(rid, shards), second)] += 1
        per_day_doc[second] += 1
    per_ledger: Counter = Counter()
    entries = 0
    first = min(a.at - a.latency_s for a in answers)
    last = max(a.at for a in answers)
    windows = {("images", _utc(first, "%Y-%m-%d")), ("images", _utc(last, "%Y-%m-%d"))}
    for t in range(int(first) - 60, int(last) + 60, 30):
        windows.add(("requests", _utc(t, "%Y-%m-%dT%H:%M")))
    for kind, window in sorted(windows):
        base = ledger_id(PRINCIPAL, kind, window)
        for ledger in [base] + [f"{base}__{p}" for p in range(SPREAD)]:
            ref = client.collection("usage_allowances").document(ledger).collection("entries")
            for snap in ref.stream():
                entries += 1
                per_ledger[(ledger, int(snap.to_dict()["at"].timestamp()))] += 1
    span = last - first
    return {
        "records": len(ids),
        "seconds": round(span, 1),
        "max_writes_per_s_one_shard": max(per_shard.values(), default=0),
        "max_writes_per_s_unsharded_day_doc": max(per_day_doc.values(), default=0),
        "ledger_entries": entries,
        "max_ledger_entries_per_s_one_ledger": max(per_ledger.values(), default=0),
    }


def quota_run(emulator, stub_url: str, instances: int, clients: int, body: bytes) -> dict:
    project = f"quota-{time.time_ns()}"
    quotas = {"principals": {PRINCIPAL: {"daily_images": QUOTA}}}
    fleet = _fleet(instances, _config(stub_url, True, quotas), emulator.env(project))
    try:
        urls = [f"{gw.url}/v1/services/eos:detect" for gw in fleet]
        answers = run_clients(urls, clients, body, KEY, until_refused=True)
    finally:
        for gw in fleet:
            gw.stop()
    client = emulator.client(project)
    served = sum(1 for a in answers if a.status == 200)
    counters = daily_counters(client, PRINCIPAL, "eos", today())
    records = {s.id for s in client.collection("usage").stream()}
    return {
        "quota": QUOTA,
        "served": served,
        "served_pct": round(100 * served / QUOTA, 1),
        "overshoot": max(0, served - QUOTA),
        "within_90_105": 0.9 * QUOTA <= served <= 1.05 * QUOTA,
        "answers": len(answers),
        "statuses": dict(Counter(a.status for a in answers)),
        "records_complete": records == {a.request_id for a in answers},
        "counters_complete": (counters["requests"], counters["images"]) == (len(answers), served),
    }


def latency_runs(
    emulator, stub_url: str, instances: int, clients: int, requests: int, rounds: int, body: bytes
) -> dict:
    quotas = {"default": {"daily_images": 1_000_000, "requests_per_minute": 100_000}}
    samples: dict[str, list[float]] = {"off": [], "on": []}
    writes = None
    for _ in range(rounds):
        for mode in ("off", "on"):
            project = f"lat-{mode}-{time.time_ns()}"
            config = _config(stub_url, mode == "on", quotas if mode == "on" else None)
            fleet = _fleet(instances, config, emulator.env(project))
            try:
                urls = [f"{gw.url}/v1/services/eos:detect" for gw in fleet]
                run_clients(urls, instances, body, KEY, requests_each=2)  # warm
                answers = run_clients(urls, clients, body, KEY, requests_each=requests)
            finally:
                for gw in fleet:
                    gw.stop()
            assert all(a.status == 200 for a in answers), Counter(a.status for a in answers)
            samples[mode] += [a.latency_s * 1000 for a in answers]
            if mode == "on":
                writes = _writes(emulator.client(project), answers, 10)
    out: dict = {"requests_per_mode": len(samples["on"])}
    for mode, values in samples.items():
        out[f"p50_ms_{mode}"] = round(_pct(values, 50), 1)
        out[f"p95_ms_{mode}"] = round(_pct(values, 95), 1)
    for p in ("p50", "p95"):
        out[f"{p}_added_ms"] = round(out[f"{p}_ms_on"] - out[f"{p}_ms_off"], 1)
        out[f"{p}_ratio"] = round(out[f"{p}_ms_on"] / out[f"{p}_ms_off"], 2)
    out["writes"] = writes
    return out


class CountingStore:
    """A store whose appends are counted per ledger entry: the write attempts one entry
    document takes, the winner's and the losers'."""

    def __init__(self, store) -> None:
        self.store = store
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()

    def entries_after(self, ledger: str, index: int):
        return self.store.entries_after(ledger, index)

    def append_entry(self, ledger: str, index: int, amount: int, meta: dict) -> bool:
        with self.lock:
            self.attempts[(ledger, index)] += 1
        return self.store.append_entry(ledger, index, amount, meta)


def ledger_simulation(emulator, instances: int, limit: int) -> dict:
    """``instances`` quota accountants (one Allowances each, as in one gateway process per
    instance) in this process, one client thread each, taking one image at a time from one
    principal's daily ledger on the emulator until refused."""
    project = f"sim-{time.time_ns()}"
    with emulator.environment(project):
        store = CountingStore(FirestoreStore(usage_settings(parse_config({}))))
        fleet = [Allowances(store) for _ in range(instances)]
    day = _utc(time.time(), "%Y-%m-%d")
    ledger = ledger_id(PRINCIPAL, "images", day)
    meta = {"principal": PRINCIPAL, "kind": "images", "window": day}
    served = [0] * instances

    busy = [0] * instances
    timeouts = [0] * instances

    def client(i: int) -> None:
        while True:
            try:
                if not fleet[i].take(ledger, day, 1, limit, meta, base=lambda: 0):
                    return
            except Contention:  # the gateway answers 429 with Retry-After: 1
                busy[i] += 1
                time.sleep(1)
                continue
            except StoreUnavailable:  # a gateway would serve it unchecked (outage policy)
                timeouts[i] += 1
                time.sleep(1)
                continue
            served[i] += 1

    started = time.monotonic()
    with emulator.environment(project):
        threads = [threading.Thread(target=client, args=(i,)) for i in range(instances)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        held = sum(s.held for a in fleet for s in a._ledgers.values())
        names = part_names(ledger, parts(limit))
        total = sum(a for name in names for _, a in store.entries_after(name, -1))
    return {
        "instances": instances,
        "limit": limit,
        "served": sum(served),
        "store_timeouts": sum(timeouts),
        "overshoot": max(0, sum(served) - limit),
        "held_unused_at_end": held,
        "ledger_sum_equals_served_plus_held": total == sum(served) + held,
        "entries": len(store.attempts),
        "max_write_attempts_one_entry": max(store.attempts.values()),
        "mean_write_attempts_per_entry": round(
            sum(store.attempts.values()) / len(store.attempts), 2
        ),
        "asked_to_retry": sum(busy),
        "seconds": round(time.monotonic() - started, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=4)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=15, help="per client in a latency run")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved off/on latency runs")
    parser.add_argument("--simulate", type=int, default=100, help="instances in the ledger run")
    parser.add_argument("--limit", type=int, default=1000, help="the quota in the ledger run")
    args = parser.parse_args(argv)
    started = time.monotonic()
    body = _jpeg()
    emulator = FirestoreEmulator()
    emulator.start()
    stub = start_stub(0.02)
    try:
        quota = quota_run(emulator, stub.url, args.instances, args.clients, body)
        latency = latency_runs(
            emulator, stub.url, args.instances, args.clients, args.requests, args.rounds, body
        )
        simulation = ledger_simulation(emulator, args.simulate, args.limit)
    finally:
        stub.stop()
        emulator.close()
    result = {
        "when": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "instances": args.instances,
        "clients": args.clients,
        "quota": quota,
        "latency": latency,
        "ledger_simulation": simulation,
        "seconds": round(time.monotonic() - started, 1),
    }
    q, lat, w = quota, latency, latency["writes"]
    print(
        f"quota {q['quota']}: served {q['served']} ({q['served_pct']}%), overshoot "
        f"{q['overshoot']}, 90-105%: {'met' if q['within_90_105'] else 'NOT met'}; records "
        f"complete: {q['records_complete']}, counters complete: {q['counters_complete']}"
    )
    print(
        f"latency p50 {lat['p50_ms_off']} -> {lat['p50_ms_on']} ms (+{lat['p50_added_ms']}, "
        f"{lat['p50_ratio']}x); p95 {lat['p95_ms_off']} -> {lat['p95_ms_on']} ms "
        f"(+{lat['p95_added_ms']}, {lat['p95_ratio']}x)"
    )
    print(
        f"writes/s to one document: shard {w['max_writes_per_s_one_shard']}, unsharded day "
        f"document would be {w['max_writes_per_s_unsharded_day_doc']}; ledger entries "
        f"{w['ledger_entries']} (at most {w['max_ledger_entries_per_s_one_ledger']}/s)"
    )
    sim = simulation
    print(
        f"ledger at {sim['instances']} instances, limit {sim['limit']}: served {sim['served']} "
        f"(overshoot {sim['overshoot']}, held unused {sim['held_unused_at_end']}), "
        f"{sim['entries']} entries, at most {sim['max_write_attempts_one_entry']} write "
        f"attempts on one entry (mean {sim['mean_write_attempts_per_entry']}), "
        f"{sim['asked_to_retry']} requests asked to retry (429, Retry-After: 1), "
        f"{sim['store_timeouts']} store calls past their deadline, "
        f"{sim['seconds']} s"
    )
    out = save_results("usage", result)
    print(f"{result['seconds']} s; results in {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
