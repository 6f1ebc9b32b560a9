"""Time per study unit (expert build, merge + evaluation, evaluation) from the unit store, by hand.

Every finished unit records its wall time in ``result.json``; this script groups them by kind and
by the model they touch and prints a markdown table for ``benchmarks/RESULTS.md``:

    python benchmarks/study_units.py [--root ~/.cache/graftkit] [--since 2026-12-02T07:00]

``--since`` keeps units finished after that time (the folder's mtime), e.g. one grid's run. The
grid's wall time is the span from the first unit's start to the last unit's end.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from graftkit.zoo.cache import cache_root


def unit_kind(record: dict) -> str:
    fn = record["unit"]["fn"].rsplit(":", 1)[-1]
    inputs = record["unit"]["inputs"]
    if fn == "train_expert":
        return f"train_expert ({inputs.get('stage', 'expert')}, {inputs['config']['steps']} steps)"
    if fn in ("evaluate", "merge_evaluate"):
        k = len(inputs.get("experts", [])) or None
        what = f"{fn} ({inputs['split']}, n={inputs['n']}, {len(inputs['tasks'])} tasks"
        return what + (f", {k} experts)" if k else ")")
    return fn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=cache_root())
    parser.add_argument("--since", type=datetime.fromisoformat, default=None)
    args = parser.parse_args()
    groups: dict[str, list[float]] = defaultdict(list)
    spans = []
    for result in sorted((args.root / "study" / "units").glob("*/result.json")):
        finished = datetime.fromtimestamp(result.stat().st_mtime, tz=timezone.utc)
        if args.since and finished < args.since.replace(tzinfo=timezone.utc):
            continue
        record = json.loads(result.read_text())
        groups[unit_kind(record)].append(record["seconds"])
        spans.append((finished.timestamp() - record["seconds"], finished.timestamp()))
    print("| unit | count | median s | min–max s | total min |")
    print("| --- | --- | --- | --- | --- |")
    for kind, seconds in sorted(groups.items()):
        print(
            f"| {kind} | {len(seconds)} | {statistics.median(seconds):.1f} | {min(seconds):.1f}–{max(seconds):.1f} "
            f"| {sum(seconds) / 60:.1f} |"
        )
    if spans:
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        busy = sum(end - start for start, end in spans)
        print(f"\nwall time first start → last end: {wall / 60:.1f} min; sum of unit times: {busy / 60:.1f} min")


if __name__ == "__main__":
    main()
