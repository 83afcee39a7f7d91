"""Scoring throughput of N ``wasteaudit worker`` processes sharing one PostgreSQL database.

    python bench/bench_workers.py                        # 10,000 calls, 1 then 4 workers, rules-only
    python bench/bench_workers.py --calls 20000 --workers 1,2,4,8 --embeddings

For each worker count: a fresh database, the same workload (``tests/reliability/worker_support.py``:
short realistic chat calls, 80 % in ended runs with return values, some truncated or repeated),
stored through the real writer; then the workers are started and timed until no call is left
unscored. Reported: wall time, calls/s in all and per worker, the workers' CPU seconds per 1,000
calls, and the speed-up over the first worker count of the same run (the baseline). The machine's
other load moves the absolute numbers; the ratio within one run is what to compare.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

from worker_support import Workers, build_workload, store, wait_until  # noqa: E402

SERVER = os.environ.get("WASTEAUDIT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _run(n_workers: int, n_calls: int, batch: int, embeddings: bool) -> dict[str, float]:
    import psycopg
    from sqlalchemy.engine import make_url

    from wasteaudit.scoring.runner import unscored
    from wasteaudit.storage.engine import create_engine_for

    name = f"wasteaudit_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(SERVER, autocommit=True, connect_timeout=5)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(SERVER).set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False)
    try:
        store(url, build_workload(n_calls, start=time.time() - 2 * 86400))
        engine = create_engine_for(url)
        with tempfile.TemporaryDirectory() as tmp:
            workers = Workers(url, Path(tmp))
            extra = ["--batch-size", str(batch)]
            cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.monotonic()
            for i in range(n_workers):
                workers.start(f"w{i}", *extra, rules_only=not embeddings)
            done = wait_until(lambda: unscored(engine) == 0, timeout=3600, interval=0.25)
            wall = time.monotonic() - started
            workers.stop_all()
            cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        engine.dispose()
        if not done:
            raise SystemExit(f"{n_workers} workers did not finish")
        cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
        return {"wall": wall, "rate": n_calls / wall, "per_worker": n_calls / wall / n_workers, "cpu_per_1k": cpu / n_calls * 1000}
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--workers", default="1,4", help="comma-separated worker counts; the first is the baseline")
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--embeddings", action="store_true", help="workers load the embedding model (default: --rules-only)")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    print(f"{args.calls} calls, batch {args.batch}, {'embeddings' if args.embeddings else 'rules only'}, cores {os.cpu_count()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    base = None
    for n in counts:
        r = _run(n, args.calls, args.batch, args.embeddings)
        base = base or r["rate"]
        print(f"{n} workers: {r['wall']:.1f} s, {r['rate']:.0f} calls/s ({r['per_worker']:.0f} per worker), "
              f"{r['cpu_per_1k']:.1f} worker CPU s per 1,000 calls, speed-up x{r['rate'] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
