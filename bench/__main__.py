"""Run the benchmark suites and print one table: ``python -m bench [--scale F] [--only SUITE]``."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import time

from bench import SUITES, Row


def _fmt(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every workload's size (default 1.0)"
    )
    parser.add_argument(
        "--only", action="append", choices=SUITES, help="run only this suite (repeatable)"
    )
    parser.add_argument("--json", action="store_true", help="print rows as JSON lines instead")
    args = parser.parse_args(argv)
    rows: list[Row] = []
    for suite in args.only or SUITES:
        started = time.perf_counter()
        print(f"[bench] {suite} ...", file=sys.stderr, flush=True)
        rows += importlib.import_module(suite).run(args.scale)
        print(
            f"[bench] {suite} done in {time.perf_counter() - started:.1f}s",
            file=sys.stderr,
            flush=True,
        )
    if args.json:
        for row in rows:
            print(json.dumps(row.__dict__))
        return 0
    print(
        f"\nsegwatch benchmarks - {platform.node()}, Python {platform.python_version()}, "
        f"scale {args.scale}"
    )
    widths = [max(len(r.name) for r in rows), 14, max(len(r.unit) for r in rows)]
    print(f"{'name':<{widths[0]}}  {'value':>{widths[1]}}  {'unit':<{widths[2]}}  conditions")
    for r in rows:
        print(
            f"{r.name:<{widths[0]}}  {_fmt(r.value):>{widths[1]}}  {r.unit:<{widths[2]}}  "
            f"{r.conditions}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
