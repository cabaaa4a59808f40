"""The served-path section's headline table and its explanation of served vs in-process, from the run's figures.

The in-process figures of docs/MODEL_REPORT.md's own sections (`pantry evaluate`) are read from that report's
bold result lines, so the comparison at the report's cuts stays true to whatever run wrote them.
"""

from __future__ import annotations

import re
from typing import Any

from load_tests.served_eval.evaluate import (
    IN_PROCESS,
    IN_PROCESS_PROTOCOL,
    NBA_SAME_WINDOWED,
    SERVED,
    SERVED_NO_STORE,
    SERVED_NOT_BOUGHT,
    SERVED_STORE,
    SERVED_TRUTH_GROUP,
)
from training import served_cases as sc
from training.evaluate_nba import RULE_NAMES
from training.protocol import NBA_CUT, REC_CUT, SUB_CUT
from training.recommender import ASSORTMENT_DAYS

SUB_NEW, SUB_ANY = "new item", "any departure"
RULES_OF = {"substitutions": (sc.NEVER_BOUGHT_POPULAR, sc.OWN_THEN_POPULAR, sc.TYPE_POPULAR),
            "recommendations": (sc.DECAYED, sc.POPULAR), "next_best_action": RULE_NAMES}


def report_figures(text: str) -> dict[str, float]:
    """The in-process headline figures of the report's own sections, where present."""
    out: dict[str, float] = {}
    for key, heading, pattern in (("recommendations", "## Recommendations", r"\*\*for_you precision@10 = ([0-9.]+)"),
                                  ("substitutions", "## Substitutions", r"\*\*model hit@3 = ([0-9.]+)"),
                                  ("next_best_action", "## Next best action", r"\*\*model hit@3 = ([0-9.]+)")):
        start = text.find(heading + "\n")
        if start < 0:
            continue
        end = text.find("\n## ", start + 1)
        found = re.search(pattern, text[start : end if end > 0 else None])
        if found:
            out[key] = float(found.group(1))
    return out


def _m(task: dict[str, Any], name: str) -> dict[str, float]:
    return task["methods"][name]


def _v(task: dict[str, Any], name: str) -> str:
    m = _m(task, name)
    return f"{m['value']:.3f} ({m['low']:.3f}-{m['high']:.3f})"


def _d(task: dict[str, Any], name: str, key: str = "vs_served") -> str:
    d = task[key][name]
    return f"{d['diff']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f})"


def _best(task: dict[str, Any], rules: tuple[str, ...]) -> str:
    return max(rules, key=lambda r: _m(task, r)["value"])


def _tasks(cut: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    return [("substitutions hit@3, new item", cut["substitutions"][SUB_NEW], SERVED),
            ("substitutions hit@3, any departure", cut["substitutions"][SUB_ANY], SERVED),
            ("recommendations precision@10, store_id = most used store", cut["recommendations"], SERVED_STORE),
            ("recommendations precision@10, no store_id", cut["recommendations"], SERVED_NO_STORE),
            ("next-best-action hit@3", cut["next_best_action"], SERVED)]


def headline(run: dict[str, Any], rules: dict[str, tuple[str, ...]] = RULES_OF) -> list[str]:
    """Per task and cut: served, in-process, the best rule and the served / rule ratio (the issue's table)."""
    lines = ["| task | cut | cases | served | in-process, same cases | best rule on the same cases | ratio |",
             "|---|---|---|---|---|---|---|"]
    for cut in run["cuts"]:
        for label, task, served in _tasks(cut):
            kind = "substitutions" if "substitutions" in label else "next_best_action" if "next" in label \
                else "recommendations"
            best = _best(task, rules[kind])
            ratio = _m(task, served)["value"] / max(_m(task, best)["value"], 1e-9)
            lines.append(f"| {label} | {cut['cut'][:10]} | {_m(task, served)['n']:,} | {_v(task, served)} | "
                         f"{_v(task, IN_PROCESS)} | {best}: {_v(task, best)} | {ratio:.2f}x |")
    return lines


def _inside(m: dict[str, float], figure: float) -> str:
    return "inside" if m["low"] <= figure <= m["high"] else "outside"


def _at(run: dict[str, Any], when) -> dict[str, Any] | None:
    return next((c for c in run["cuts"] if c["cut"][:10] == when.date().isoformat()), None)


def explanation(run: dict[str, Any], report_text: str = "") -> list[str]:
    cuts = run["cuts"]
    new = [c["substitutions"][SUB_NEW] for c in cuts]
    anyd = [c["substitutions"][SUB_ANY] for c in cuts]
    recs = [c["recommendations"] for c in cuts]
    nbas = [c["next_best_action"] for c in cuts]
    names = ", ".join(c["cut"][:10] for c in cuts)
    stock = max(t["diagnostics"]["... and taken out by the stock rule"] for t in new + anyd)
    lines = [
        "### Why served and in-process figures differ",
        "",
        f"Cuts {names}; every difference below is served minus in-process on the same cases (paired 95% interval).",
        "",
        "- **Substitutions: what serving ranks.** Serving ranks the first 20 of the served pool and the customer's "
        "own other items of the type (the version's history of the customer, plus what the live "
        "`customer_repertoire` row adds since the cut: nothing, at the cut), items bought before included; the "
        "report's protocol takes those out of the candidates. On the new-item protocol, whose truth is never an "
        "item bought before, that is most of the gap to the report's figure: in-process on the same cases, with "
        "them in: " + ", ".join(_v(t, IN_PROCESS) for t in new)
        + "; with them out: " + ", ".join(_v(t, IN_PROCESS_PROTOCOL) for t in new)
        + ". The served top 3 holds an item bought before in "
        + ", ".join(f"{t['diagnostics']['served top 3 with an item bought before']:.2f}" for t in new)
        + " of these cases; the served lists with those items taken out score "
        + ", ".join(_v(t, SERVED_NOT_BOUGHT) for t in new) + ".",
        "- **Substitutions: the stock row.** The only scoring difference on this data (the substitution feedback "
        "terms serving also adds are empty: the data set has no substitution feedback, and no preferences): served "
        "adds log(in-stock probability) "
        "of the store's `store_product` row to the logit and fills the ranker's store-sales column "
        "(`log_store_units_28d`) from that row (in-process: no row, so probability 0.5 and sales 0 for every "
        "candidate). Served minus in-process: new-item protocol " + ", ".join(_d(t, IN_PROCESS) for t in new)
        + "; any departure " + ", ".join(_d(t, IN_PROCESS) for t in anyd) + ".",
        f"- **Substitutions: the stock rule and the pool.** The stock rule (never offer on_hand 0 or in-stock "
        f"probability 0) took the chosen item out in at most {stock:.3f} of the cases at any cut: the data has no "
        "inventory events (no on_hand), and the in-stock estimate from sales velocity (streaming/features/store.py) "
        "is never 0, so the stock read only re-weights the ranking (its log above). Serving ranks "
        "the first 20 of the served pool, and the chosen item is among them in "
        + ", ".join(f"{t['diagnostics']['chosen item among the served pool' + chr(39) + 's first 20']:.2f}"
                    for t in new) + " of the new-item cases; a larger pool does not move the top 3 (40 instead of "
        "20: +0.002 / +0.001 new item / any departure on the validation cut 2017-07-25, +0.001 / +0.001 on "
        "2017-06-20, experiments/substitution_novelty.py).",
        *substitution_limits(new, anyd),
        "- **Recommendations: the store filter.** Asked without `store_id`, the served list equals the in-process one "
        "for " + ", ".join(f"{t['diagnostics']['served without store_id == in-process (share of customers)']:.3f}"
                           for t in recs)
        + " of the customers: as of the cut, the live repertoire has nothing bought since the model's cut (both are "
        "the cut), the embedding row is the version's own and no cart is open (the session view's TTL is 1 h). With "
        f"the customer's most used store, only items that store sold in the {ASSORTMENT_DAYS} days before the "
        "model's cut are offered (a version without that table: the last 28 days); that costs "
        + ", ".join(_d(t, IN_PROCESS) for t in recs) + " (served with the store minus in-process).",
        "- **Next best action: the campaign's last day.** Served equals in-process for "
        + ", ".join(f"{t['diagnostics']['served == in-process (share of redemptions)']:.3f}" for t in nbas)
        + " of the redemptions (hit@3 served minus in-process: " + ", ".join(_d(t, IN_PROCESS) for t in nbas)
        + "). The ranker reads no online row and the demo approves every historical campaign; the rest are "
        "redemptions dated the day after one of the customer's campaigns ended: the model's `candidates` keeps a "
        "campaign through the day after its end date, serving offers it only while start <= as_of <= end "
        "(serving/campaigns.py). Given serving's window, in-process equals served for "
        + ", ".join(f"{t['diagnostics'].get(NBA_SAME_WINDOWED, float('nan')):.3f}" for t in nbas) + ".",
    ]
    lines += _against_report(run, report_figures(report_text))
    return [*lines, "", "### Served against the rules", "", *_against_rules(run), ""]


def substitution_limits(new: list[dict[str, Any]], anyd: list[dict[str, Any]]) -> list[str]:
    """Where one list of 3 for both protocols wins and loses against the rules, and its ceiling with the chosen
    item's group known (a diagnostic that reads the truth; absent from runs before it was measured)."""
    if any(SERVED_TRUTH_GROUP not in t["methods"] for t in new + anyd):
        return []
    split = "chosen item bought before (share of cases)"
    hit = "{}: hit@3 where the chosen item was {}"

    def part(who: str, group: str) -> str:
        return ", ".join(f"{t['diagnostics'][hit.format(who, group)]:.3f}" for t in anyd)

    def ratio(task: dict[str, Any], name: str, rule: str) -> str:
        return f"{_m(task, name)['value'] / max(_m(task, rule)['value'], 1e-9):.3f}x"

    below = sum(_m(t, SERVED_TRUTH_GROUP)["value"] < 1.2 * _m(t, sc.NEVER_BOUGHT_POPULAR)["value"] for t in new)
    return [
        "- **Substitutions: one list for two kinds of shopper.** Of the any-departure cases, "
        + ", ".join(f"{t['diagnostics'][split]:.2f}" for t in anyd) + " went back to an item bought before. On "
        "those the served list hits " + part("served", "bought before") + " against the own-items rule's "
        + part("own-items rule", "bought before") + "; on the others " + part("served", "never bought")
        + " against " + part("own-items rule", "never bought") + ". The served list taken from the chosen item's "
        "group only (its own items when the truth was one, its never-bought ones otherwise: a ceiling that reads "
        "the truth, what a perfect call of who goes back and who tries something new would give with the served "
        "order) reaches, new item: " + ", ".join(
            f"{_v(t, SERVED_TRUTH_GROUP)} = {ratio(t, SERVED_TRUTH_GROUP, sc.NEVER_BOUGHT_POPULAR)}" for t in new)
        + " the never-bought rule; any departure: " + ", ".join(
            f"{_v(t, SERVED_TRUTH_GROUP)} = {ratio(t, SERVED_TRUTH_GROUP, sc.OWN_THEN_POPULAR)}" for t in anyd)
        + f" the own-items rule. The ceiling is below 1.2x the never-bought rule at {below} of {len(new)} cuts: "
        "there the new-item target is out of reach of this ranking however well the two kinds of shopper are told "
        "apart (what was tried: below).",
    ]


def _against_rules(run: dict[str, Any]) -> list[str]:
    """Per task: served minus the best rule at each cut (paired), and at how many cuts the interval excludes 0."""
    out = []
    for i, (label, _task, served) in enumerate(_tasks(run["cuts"][0])):
        kind = "substitutions" if "substitutions" in label else "next_best_action" if "next" in label \
            else "recommendations"
        cells, above, below = [], 0, 0
        for cut in run["cuts"]:
            task = _tasks(cut)[i][1]
            best = _best(task, RULES_OF[kind])
            key = "vs_served" if served == task["served"] else "vs_served_no_store"
            d = task[key][best]
            above, below = above + (d["low"] > 0), below + (d["high"] < 0)
            cells.append(f"{cut['cut'][:10]} {d['diff']:+.3f} ({d['low']:+.3f} to {d['high']:+.3f}) vs {best}")
        n = len(run["cuts"])
        out.append(f"- **{label}** ({served}): served minus the best rule " + "; ".join(cells)
                   + f". Above the rule at {above} of {n} cuts, below at {below}, level (the interval holds 0) at "
                   f"{n - above - below}.")
    return out


def _against_report(run: dict[str, Any], figures: dict[str, float]) -> list[str]:
    """The report's own in-process figures (sections above) next to this run's at the same cut."""
    out = []
    sub, nba, rec = _at(run, SUB_CUT), _at(run, NBA_CUT), _at(run, REC_CUT)
    if sub and "substitutions" in figures:
        t = sub["substitutions"][SUB_NEW]
        m = _m(t, IN_PROCESS_PROTOCOL)
        out.append(f"- **Against the report's substitutions figure** ({SUB_CUT.date()}, all {t['events']:,} new-item "
                   f"events, candidates without the items bought before): {figures['substitutions']:.3f}; the same "
                   f"protocol on this run's {m['n']:,} sampled events: {_v(t, IN_PROCESS_PROTOCOL)} "
                   f"({_inside(m, figures['substitutions'])} the interval; "
                   "the report's candidates are the type's top 50 by buyers, serving's the first 20 of the served "
                   f"pool). Served: {_v(t, SERVED)}, lower: the served list holds items bought before (above).")
    if nba and "next_best_action" in figures:
        t = nba["next_best_action"]
        m = _m(t, SERVED)
        out.append(f"- **Against the report's next-best-action figure** ({NBA_CUT.date()}, the same "
                   f"{t['events']:,} redemptions): {figures['next_best_action']:.3f}; served {_v(t, SERVED)} "
                   f"({_inside(m, figures['next_best_action'])} the "
                   "interval; the report's ranker is trained by the evaluation, the served one by `pantry train "
                   "--until` in the demo, from the same code and data).")
    if rec and "recommendations" in figures:
        t = rec["recommendations"]
        m = _m(t, SERVED_NO_STORE)
        out.append(f"- **Against the report's recommendations figure** (cut {REC_CUT.isoformat()[:19]}, every "
                   f"customer, truth to the end of the data): {figures['recommendations']:.3f}; served without "
                   f"store_id at {rec['cut'][:10]} (midnight) on {m['n']:,} sampled customers, truth the "
                   f"{t['window_days']} days after: {_v(t, SERVED_NO_STORE)} "
                   f"({_inside(m, figures['recommendations'])} the "
                   "interval).")
    return out
