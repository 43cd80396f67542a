"""Throughput of the annotation app's API under concurrent annotators on loopback; 0 lost writes expected.

Starts the real ``finealign annotate serve`` (one uvicorn process, SQLite in WAL mode with
synchronous=FULL) on 127.0.0.1 over a fresh database of synthetic pairs, then runs ``--annotators``
concurrent clients (asyncio + httpx, one keep-alive connection each) for ``--duration`` seconds. Each
annotator does what the page does per item: ``GET /api/next``, ``--diffs`` live-diff calls
(``POST /api/diff``, as while typing), ``POST /api/submit``. Afterwards every acknowledged submit is
looked up in the database (a missing or different row is a lost write) and every item is checked
against its annotator target (more is a collision). Prints JSON: requests/s, latency percentiles
per route, lost writes, collisions. Needs no torch and no model.

    python benchmarks/annotate_throughput.py --annotators 20 --duration 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the model answers the question with a short list of facts about rivers lakes and seas that "
         "are mostly correct but one date is wrong and the tone is a little too sure of itself").split()


def pct(xs: list[float], q: float) -> float:
    """The q-th percentile (nearest rank) of xs, in milliseconds rounded to 0.1."""
    s = sorted(xs)
    return round(s[min(len(s) - 1, max(0, int(round(q / 100 * len(s))) - 1))] * 1000, 1)


def make_pairs(n: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(60)]
        out.append({"id": f"b{i}", "prompt": f"Question {i}: tell me about water.",
                    "chosen": " ".join(words), "rejected": " ".join(words[:30] + ["wrongly"] + words[31:])})
    return out


def start_server(db: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "finealign.cli.main", "annotate", "serve", "--db", str(db),
                             "--port", str(port), "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited: {proc.stderr.read().decode()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    sys.exit("server did not start")


async def annotator(base: str, token: str, deadline: float, diffs: int, lat: dict, acked: list, errors: list):
    import httpx

    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:

        async def call(route: str, method: str, path: str, body=None):
            t = time.perf_counter()
            r = await c.request(method, path, json=body)
            lat[route].append(time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(f"{route} {r.status_code} {r.text[:100]}")
                return None
            return r.json()

        while time.monotonic() < deadline:
            data = await call("next", "GET", "/api/next")
            if data is None or data["item"] is None:
                return
            item = data["item"]
            text = item["rejected"]
            for k in range(diffs):  # typing: the edit grows towards the final text
                text = text.replace("wrongly", "correctly" if k == diffs - 1 else "correct"[: 3 + k])
                await call("diff", "POST", "/api/diff", {"item_id": item["id"], "edited": text})
            final = item["rejected"].replace("wrongly", f"correctly ({token[:6]})")
            if await call("submit", "POST", "/api/submit", {"item_id": item["id"], "edited": final, "seconds": 1.0}):
                acked.append((token, item["id"], final))


def verify(db: Path, tokens: dict[str, int], acked: list) -> dict:
    """Lost writes (acknowledged but absent or different) and items over their annotator target."""
    con = sqlite3.connect(db)
    rows = {(a, i): e for i, a, e in con.execute("SELECT item_id, annotator_id, edited FROM annotations")}
    lost = sum(rows.get((tokens[t], i)) != e for t, i, e in acked)
    over = con.execute("SELECT COUNT(*) FROM items i WHERE (SELECT COUNT(*) FROM annotations n "
                       "WHERE n.item_id = i.id) > i.target").fetchone()[0]
    con.close()
    return {"rows_in_db": len(rows), "lost_writes": lost, "items_over_target": over}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--annotators", type=int, default=20)
    ap.add_argument("--duration", type=float, default=30.0, help="Seconds of load.")
    ap.add_argument("--items", type=int, default=5000, help="Items in the database (enough not to run out).")
    ap.add_argument("--diffs", type=int, default=2, help="Live-diff calls per item.")
    ap.add_argument("--overlap", type=float, default=0.1, help="Share of items given to 2 annotators.")
    ap.add_argument("--workdir", default=None, help="Where the database goes (default: a temporary folder).")
    args = ap.parse_args()

    from finealign.serve.annotate.store import AnnotationStore

    work = Path(args.workdir or tempfile.mkdtemp(prefix="finealign-annotate-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "bench.sqlite"
    for p in work.glob("bench.sqlite*"):
        p.unlink()
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_pairs(args.items, random.Random(0))))
    store = AnnotationStore(db)
    store.import_file(data)
    store.set_overlap(args.overlap, 2)
    tokens = {}
    for k in range(args.annotators):
        t = store.add_annotator(f"a{k}")
        tokens[t] = store.annotator_for_token(t).id
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = start_server(db, port)
    lat: dict[str, list[float]] = {"next": [], "diff": [], "submit": []}
    acked: list = []
    errors: list = []
    try:
        t0 = time.monotonic()
        deadline = t0 + args.duration

        async def run_all():
            await asyncio.gather(*(annotator(f"http://127.0.0.1:{port}", t, deadline, args.diffs, lat, acked, errors)
                                   for t in tokens))

        asyncio.run(run_all())
        wall = time.monotonic() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    every = [x for v in lat.values() for x in v]
    out = {
        "annotators": args.annotators, "duration_s": round(wall, 2), "diffs_per_item": args.diffs,
        "requests": len(every), "requests_per_s": round(len(every) / wall, 1),
        "items_per_s": round(len(acked) / wall, 1), "submits_acked": len(acked), "errors": len(errors),
        "latency_ms": {route: {"p50": pct(v, 50), "p95": pct(v, 95), "p99": pct(v, 99), "mean":
                               round(statistics.fmean(v) * 1000, 1)} for route, v in {"all": every, **lat}.items() if v},
        **verify(db, tokens, acked),
        "server": "1 uvicorn process (finealign annotate serve), SQLite WAL, synchronous=FULL",
        "cpus": os.cpu_count(), "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
    }
    if errors:
        out["first_errors"] = errors[:5]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
