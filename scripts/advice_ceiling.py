"""How many of a reproduction's judged datasets a cautious select-start could pick right at all.

select-start leaves the base only for a gain that clears 1.645 standard errors, and its
standard error never goes below ``SE_FLOOR`` (one point), so no gain under
``Z * SE_FLOOR`` (1.6 points) is ever confirmed. Given the starts' measured test accuracies
(``start.per_dataset`` of docs/reproduction.json, the mixture's where it was fine-tuned), a
dataset is *within reach* of such a rule when

* the base is within TIE of the best start (keeping the base is right), or
* a start within TIE of the best gains more than the floor over the base (evidence as sharp
  as the rule allows could confirm it).

The count within reach is what the rule can be expected to reach with unbiased evidence;
a pick right beyond it rode evidence that overstated a gain smaller than the floor (luck
or bias, which off-region turns into losses). Each dataset's ``gain_to_confirm`` (the
largest gain over the base among the starts within TIE of the best; none where the base
is) gives the floor any target count needs: ``floor_for``.

    .venv/bin/python scripts/advice_ceiling.py docs/reproduction.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from reproduce import judged_accuracies  # noqa: E402
from zoo.select import SE_FLOOR, Z  # noqa: E402


def gain_to_confirm(acc: dict[str, float], tie: float) -> float | None:
    """The largest gain over the base among the starts within TIE of the best: what evidence
    must confirm to pick one of them; None when the base is within TIE (keep it)."""
    best = max(acc.values())
    if acc["base"] >= best - tie:
        return None
    return max(a - acc["base"] for a in acc.values() if a >= best - tie)


def floor_for(gains: list[float | None], target: int) -> float | None:
    """The confirmable gain a rule must get under to have TARGET datasets within reach: just
    under the target-th largest gain to confirm (None: the base alone reaches it; 0.0: no floor does)."""
    free = sum(g is None for g in gains)
    need = sorted((g for g in gains if g is not None), reverse=True)
    if target <= free:
        return None
    return need[target - free - 1] if target - free <= len(need) else 0.0


def ceiling(report: dict[str, Any], region: str, setting: str, floor: float = Z * SE_FLOOR) -> dict[str, Any]:
    """Per judged dataset of REGION and SETTING: the best start, its gap to the base, whether it
    is within reach of the rule, and whether select-start's pick was right; with the counts."""
    tie = report["start"]["tie"]
    per = report["start"]["per_dataset"].get(setting, {})
    rows = {}
    for ds, pick in sorted(report["advice"]["picks"].get(region, {}).get(setting, {}).items()):
        if ds not in per:
            continue
        acc = judged_accuracies(region, per[ds], pick)
        if pick["recommended"] not in acc:
            continue  # not judged
        best = max(acc, key=acc.get)
        need = gain_to_confirm(acc, tie)
        rows[ds] = {"best": best, "best_minus_base": acc[best] - acc["base"],
                    "within_reach": need is None or need > floor, "gain_to_confirm": need,
                    "picked": pick["recommended"], "picked_right": acc[pick["recommended"]] >= acc[best] - tie}
    return {"region": region, "setting": setting, "floor": floor, "tie": tie, "rows": rows, "judged": len(rows),
            "within_reach": sum(r["within_reach"] for r in rows.values()),
            "picked_right": sum(r["picked_right"] for r in rows.values()),
            "right_beyond_reach": sorted(d for d, r in rows.items() if r["picked_right"] and not r["within_reach"]),
            "missed_within_reach": sorted(d for d, r in rows.items() if r["within_reach"] and not r["picked_right"]),
            "floor_for": {k: floor_for([r["gain_to_confirm"] for r in rows.values()], k)
                          for k in range(1, len(rows) + 1)}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", type=Path, help="docs/reproduction.json")
    ap.add_argument("--target", type=int, default=7, help="the count whose floor is printed")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        report = json.loads(args.report.read_text())
    except (OSError, ValueError) as e:
        ap.error(f"cannot read the report {args.report}: {e}; pass the docs/reproduction.json that make reproduce wrote")
    if "start" not in report or "advice" not in report:
        ap.error(f"{args.report} has no start and advice stages: run make reproduce (stages start and advice) first")
    out = [ceiling(report, region, setting) for region in ("on", "off")
           for setting in report["start"]["per_dataset"]]
    if args.json:
        print(json.dumps(out, indent=1))
        return
    for c in out:
        print(f"{c['region']}-region {c['setting']}: picked right {c['picked_right']} of {c['judged']}; within reach of "
              f"a rule confirming gains above {c['floor'] * 100:.2f} points: {c['within_reach']}; right beyond reach: "
              f"{', '.join(c['right_beyond_reach']) or '-'}; missed within reach: {', '.join(c['missed_within_reach']) or '-'}")
        f = c["floor_for"].get(args.target)
        print(f"  {args.target} within reach needs: " + ("no evidence (the base is right that often)" if f is None else
              "more datasets" if args.target > c["judged"] else f"confirming gains under {f * 100:.2f} points"))
        for ds, r in c["rows"].items():
            print(f"  {ds:>20}  best {r['best']:>13} {r['best_minus_base'] * 100:+5.2f} over the base  "
                  f"{'within reach' if r['within_reach'] else 'beyond reach':>12}  picked {r['picked']:>13} "
                  f"{'right' if r['picked_right'] else 'wrong'}")


if __name__ == "__main__":
    main()
