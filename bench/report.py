"""The benchmark report: reads the latest bench/results/*.json, writes bench/results/REPORT.md,
replaces the table in the README's Performance section, and draws the plots (PNG, with
matplotlib from the `plots` extra; skipped, and said so, without it).

    python -m bench.report [--quick]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swf_pool.settings import default

from .common import RESULTS

DEFAULT_BATCH_SIZE = default("batch_size")

README = RESULTS.parent.parent / "README.md"
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
ORDER = ("enqueue", "drain", "latency", "contention", "scaling", "table-size")


def _n(value: float) -> str:
    return f"{value:,.0f}"


def _enqueue(r: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("`submit` one at a time (`enqueue`)", f"{_n(r['submit runs/s'])} runs/s"),
        (
            "`submit_many`, 5,000 per call (`enqueue`)",
            f"{_n(r['submit_many runs/s'])} runs/s, {r['ratio']}x `submit` per run",
        ),
    ]


def _drain(r: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    batch = r["batch"]
    return [
        (
            f"bare SQL ceiling: claim {batch} with the CTE, mark succeeded, no events (`drain`)",
            f"{_n(r['ceiling runs/s'])} runs/s",
        ),
        (
            f"pool drain of {_n(r['runs'])} no-op runs, 2 processes, batch {batch} (prefetch "
            f"{2 * batch}), full audit; medians of {r.get('repeat', 1)}",
            f"{_n(r['full audit runs/s'])} runs/s, {r['full/ceiling']} of the ceiling",
        ),
        (
            "same, lean audit (`--audit failures`)",
            f"{_n(r['lean audit runs/s'])} runs/s, {r['lean/ceiling']} of the ceiling",
        ),
        (
            f"same with the pool's defaults (batch {DEFAULT_BATCH_SIZE}, automatic prefetch), "
            "full audit",
            f"{_n(r['defaults, full audit runs/s'])} runs/s"
            if "defaults, full audit runs/s" in r
            else "not measured",
        ),
        ("statements per run in steady state", f"{r['statements/run']}"),
        (
            f"CPU µs per run at batch {batch}: PostgreSQL / coordinator / workers",
            r.get("cpu µs/run, PostgreSQL/coordinator/workers", "not measured"),
        ),
        (
            "by batch size: ceiling / full audit / lean audit runs/s",
            "; ".join(
                f"{x['batch']}: {_n(x['ceiling runs/s'])} / {_n(x['full audit runs/s'])} "
                f"({x['full/ceiling']}) / {_n(x['lean audit runs/s'])} ({x['lean/ceiling']})"
                for x in s.get("by batch", [])
            ),
        ),
    ]


def _latency(r: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (
            f"enqueue-to-start latency, idle pool, NOTIFY, {r['runs']} runs (`latency`)",
            f"p50 {r['p50 ms']} ms, p95 {r['p95 ms']} ms, p99 {r['p99 ms']} ms after the "
            f"commit (p50 {r['p50 ms from the submit call']} ms from the `submit` call)",
        )
    ]


def _contention(r: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = s.get("by pools", [])
    rates = ", ".join(f"{x['pools']}: {_n(x['runs/s'])}" for x in rows)
    wasted = ", ".join(f"{x['pools']}: {x['wasted']:.1%}" for x in rows)
    return [
        (
            "pools on one table, aggregate runs/s (`contention`)",
            f"{rates} ({r['4 pools / 1']}x with 4); empty claims {wasted}",
        )
    ]


def _scaling(r: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    rates = s.get("runs/s by processes", {})
    text = ", ".join(f"{n} process(es): {v:.1f}" for n, v in rates.items())
    return [("CPU-bound handler, ~20 ms of pure Python (`scaling`)", f"{text} runs/s: "
             f"{r['speed-up']}x")]  # fmt: skip


def _table_size(r: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str]]:
    rows = s.get("by size", [])
    text = "; ".join(
        f"{_n(x['finished rows'])} finished: claim {x['claim of 100 ms']} ms, "
        f"{_n(x['drain runs/s'])} runs/s"
        for x in rows
    )
    return [("claim with history in the table (`table_size`)", text)]


FORMATS: dict[str, Callable[[dict[str, Any], dict[str, Any]], list[tuple[str, str]]]] = {
    "enqueue": _enqueue,
    "drain": _drain,
    "latency": _latency,
    "contention": _contention,
    "scaling": _scaling,
    "table-size": _table_size,
}


def load(folder: Path) -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(folder.glob("*.json")):
        data = json.loads(path.read_text())
        found[data["results"]["scenario"]] = data
    return found


def describe(machine: dict[str, Any]) -> str:
    parts = [
        f"{machine.get('cpus')} cores ({machine.get('cpu') or 'unknown CPU'})",
        f"{machine.get('memory GiB')} GiB",
        f"PostgreSQL {machine.get('postgresql')} on loopback",
        f"Python {machine.get('python')}",
        f"{machine.get('platform')}",
    ]
    return ", ".join(parts)


def table(results: dict[str, dict[str, Any]]) -> str:
    lines = ["| scenario (`bench/`) | result |", "|---|---|"]
    for name in ORDER:
        if name in results:
            data = results[name]
            for label, text in FORMATS[name](data["results"], data["samples"]):
                lines.append(f"| {label} | {text} |")
    first = next(iter(results.values()))
    dates = sorted(d["results"]["at"][:10] for d in results.values())
    commit = first["machine"].get("commit")
    lines += [
        "",
        f"Machine: {describe(first['machine'])}. Measured {dates[0]} to {dates[-1]}"
        + (f" at commit `{commit}`." if commit else "."),
    ]
    return "\n".join(lines)


def plots(results: dict[str, dict[str, Any]], folder: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench.report: no matplotlib (pip install 'swf-pool[plots]'): no plots drawn")
        return []
    drawn = []
    if "drain" in results:
        rows = results["drain"]["samples"].get("by batch", [])
        figure, axes = plt.subplots(figsize=(6, 3.2))
        batches = [r["batch"] for r in rows]
        for key, label in (
            ("ceiling runs/s", "bare SQL ceiling"),
            ("lean audit runs/s", "pool, lean audit"),
            ("full audit runs/s", "pool, full audit"),
        ):
            axes.plot(batches, [r[key] for r in rows], marker="o", label=label)
        axes.set(xlabel="batch size", ylabel="runs/s", title="Drain of no-op runs by batch size")
        axes.set_xscale("log")
        axes.set_xticks(batches, [str(b) for b in batches])
        axes.minorticks_off()
        axes.legend()
        drawn.append(_save(figure, folder / "throughput-by-batch.png"))
    if "scaling" in results:
        rates = results["scaling"]["samples"].get("runs/s by processes", {})
        figure, axes = plt.subplots(figsize=(6, 3.2))
        processes = [int(n) for n in rates]
        axes.plot(processes, list(rates.values()), marker="o", label="measured")
        axes.plot(processes, [rates["1"] * n for n in processes], "--", label="linear")
        axes.set(xlabel="processes", ylabel="runs/s", title="CPU-bound runs (~20 ms) by processes")
        axes.set_xticks(processes)
        axes.legend()
        drawn.append(_save(figure, folder / "throughput-by-processes.png"))
    if "latency" in results:
        samples = results["latency"]["samples"].get("ms after the commit", [])
        figure, axes = plt.subplots(figsize=(6, 3.2))
        axes.hist(samples, bins=50)
        axes.set(
            xlabel="ms from commit to handler start",
            ylabel="runs",
            title="Enqueue-to-start latency (idle pool, NOTIFY)",
        )
        drawn.append(_save(figure, folder / "latency.png"))
    return drawn


def _save(figure: Any, path: Path) -> str:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path.name


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="report the --quick results instead")
    args = p.parse_args()
    folder = RESULTS / "quick" if args.quick else RESULTS
    results = load(folder)
    if not results:
        raise SystemExit(f"bench.report: no results in {folder}: run `make bench` first")
    text = table(results)
    images = plots(results, folder)
    report = "# swf-pool benchmark report\n\n" + text + "\n"
    report += "".join(f"\n![{name}]({name})\n" for name in images)
    (folder / "REPORT.md").write_text(report)
    print(report)
    if not args.quick:
        readme = README.read_text()
        if START in readme and END in readme:
            head, rest = readme.split(START, 1)
            tail = rest.split(END, 1)[1]
            pictures = "".join(f"\n![{n}](bench/results/{n})\n" for n in images)
            README.write_text(f"{head}{START}\n{text}\n{pictures}{END}{tail}")
            print("bench.report: README's Performance table updated")


if __name__ == "__main__":
    main()
