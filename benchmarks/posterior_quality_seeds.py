"""Summarise several ``posterior_quality.py`` results (one per seed) in one table.

One seed per method says little about which approximation is closest to the reference: the
distances move with the initialisation as much as between methods. Each folder given holds a
``results.json`` written by ``posterior_quality.py`` (typically the same task at ``--seed``
0, 1, 2 against one NUTS reference, see its ``--nuts-seed``); for every task and method present
in all of them this prints the mean of each distance and score with its range over the seeds,
and how many of the seeds rank the method closest on the task's first distance.

    python benchmarks/posterior_quality_seeds.py runs/quality-s0 runs/quality-s1 runs/quality-s2
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def load(folders: list[Path]) -> list[dict]:
    """Each folder's ``results.json``; a missing one is a one-line error."""
    results = []
    for folder in folders:
        path = folder / "results.json"
        if not path.is_file():
            raise SystemExit(f"no results.json in {folder}: run posterior_quality.py there first")
        results.append(json.loads(path.read_text()))
    return results


def finite_values(rows: list[dict], group: str, key: str) -> list[float]:
    values = [row.get(group, {}).get(key) for row in rows]
    return [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]


def summarise(results: list[dict]) -> dict[str, dict]:
    """Per task, per method: ``{"seeds": n, "closest": k, "distances"/"scores": {key: (mean,
    low, high)}}``, over the methods and tasks every result holds without an error."""
    summary: dict[str, dict] = {}
    tasks = set.intersection(*(set(r["tasks"]) for r in results))
    for task in sorted(tasks):
        entries = [r["tasks"][task]["methods"] for r in results]
        reference = results[0]["tasks"][task]["reference"]
        methods = [
            m for m in entries[0] if all("error" not in e.get(m, {"error": 1}) for e in entries)
        ]
        first = next(iter(entries[0][methods[0]].get("distances", {})), None) if methods else None
        closest = {m: 0 for m in methods}
        for entry in entries:
            candidates = {
                m: entry[m]["distances"][first]
                for m in methods
                if m != reference and first in entry[m].get("distances", {})
            }
            if candidates:
                closest[min(candidates, key=candidates.get)] += 1
        table = {}
        for method in methods:
            rows = [entry[method] for entry in entries]
            row: dict = {"seeds": len(rows), "closest": closest[method]}
            for group in ("distances", "scores"):
                row[group] = {}
                for key in rows[0].get(group, {}):
                    values = finite_values(rows, group, key)
                    if values:
                        row[group][key] = (sum(values) / len(values), min(values), max(values))
            table[method] = row
        summary[task] = {"first_distance": first, "methods": table}
    return summary


def markdown(summary: dict[str, dict]) -> str:
    lines = []
    for task, entry in summary.items():
        methods = entry["methods"]
        keys = [
            (group, key)
            for group in ("distances", "scores")
            for key in next(iter(methods.values()))[group]
        ]
        seeds = max(row["seeds"] for row in methods.values())
        lines += [f"### {task}: mean [min, max] over {seeds} seeds", ""]
        header = [key for _, key in keys] + [f"closest on {entry['first_distance']}"]
        lines += ["| method | " + " | ".join(header) + " |", "|---|" + "---:|" * len(header)]
        for method, row in methods.items():
            cells = []
            for group, key in keys:
                value = row[group].get(key)
                cells.append(
                    "–" if value is None else f"{value[0]:.3g} [{value[1]:.3g}, {value[2]:.3g}]"
                )
            cells.append(f"{row['closest']} of {row['seeds']}")
            lines.append(f"| {method} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="posterior_quality.py --out folders")
    parser.add_argument("--out", type=Path, help="also write the table (markdown) here")
    args = parser.parse_args(argv)
    if len(args.folders) < 2:
        parser.error("give at least two result folders (one per seed)")
    sources = ", ".join(f"`{folder}`" for folder in args.folders)
    table = f"From {sources}.\n\n" + markdown(summarise(load(args.folders)))
    if args.out is not None:
        args.out.write_text(table)
    sys.stdout.write(table)


if __name__ == "__main__":
    main()
