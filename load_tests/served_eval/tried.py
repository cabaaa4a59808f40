"""What was tried to lift the served substitution answer on both protocols at once (docs/MODEL_REPORT.md's served
section, docs/DECISIONS.md "Can the substitution ranker tell who switches to a new item?").

Measured in-process on validation cuts before the first served cut, never on a served cut: rankers trained as
`pantry train` trains them (the 2 windows of 35 days before the cut), scored on the served evaluation's two
protocols over the 35 days after it (every event, not a sample), candidates as serving ranks them (the pool's first
20 + the customer's own other items of the type). Each figure was printed by the experiment named in its row.
"""

from __future__ import annotations

CUTS = ("2017-07-25", "2017-06-20")
NOVELTY = "experiments/substitution_novelty.py"
PROPENSITY = "experiments/substitution_propensity.py"
CAPACITY = "experiments/substitution_capacity.py"
STORE = "experiments/substitution_store_assortment.py"
# (what, experiment, {cut: (new item hit@3, any departure hit@3)})
ROWS: tuple[tuple[str, str, dict[str, tuple[str, str]]], ...] = (
    ("the served ranker (24 columns, trained on departures)", NOVELTY,
     {"2017-07-25": ("0.219", "0.525"), "2017-06-20": ("0.219", "0.522")}),
    ("+ novelty: the customer's share of purchase lines that were a first purchase of an item, overall and in the "
     "type; the type's share; the customer's lines in the type", NOVELTY,
     {"2017-07-25": ("0.218", "0.527"), "2017-06-20": ("0.220", "0.526")}),
    ("+ the candidate's rank among the never-bought ones (the never-bought rule's order)", NOVELTY,
     {"2017-07-25": ("0.217", "0.525"), "2017-06-20": ("0.218", "0.522")}),
    ("+ maker and size loyalty (the customer's share of the type's lines of the candidate's maker, size)", NOVELTY,
     {"2017-07-25": ("0.216", "0.524"), "2017-06-20": ("0.221", "0.524")}),
    ("+ all three", NOVELTY, {"2017-07-25": ("0.215", "0.526"), "2017-06-20": ("0.222", "0.525")}),
    ("the served ranker, the pool's first 40 instead of 20", NOVELTY,
     {"2017-07-25": ("0.221", "0.526"), "2017-06-20": ("0.220", "0.523")}),
    ("+ novelty, the pool's first 40", NOVELTY, {"2017-07-25": ("0.219", "0.528"), "2017-06-20": ("0.222", "0.528")}),
    ("+ all three, the pool's first 40", NOVELTY, {"2017-07-25": ("0.217", "0.527"), "2017-06-20": ("0.224", "0.526")}),
    ("the served ranker, 300 trees x 31 leaves, lr 0.05", CAPACITY,
     {"2017-07-25": ("0.216", "0.520"), "2017-06-20": ("0.217", "0.520")}),
    ("the served ranker on 4 windows instead of 2", CAPACITY,
     {"2017-07-25": ("0.216", "0.525"), "2017-06-20": ("0.215", "0.521")}),
    ("the served ranker on every departure of its 2 windows (not 4,000 each)", CAPACITY,
     {"2017-07-25": ("0.217", "0.526"), "2017-06-20": ("0.216", "0.525")}),
    ("the served ranker, candidates limited to what the event's store sold in the 365 days before the cut", STORE,
     {"2017-07-25": ("0.185", "0.478"), "2017-06-20": ("0.181", "0.478")}),
    ("... the others kept with -1 on the logit", STORE,
     {"2017-07-25": ("0.213", "0.519"), "2017-06-20": ("0.211", "0.516")}),
    ("trained on departures + the new-item protocol's events of the same windows", NOVELTY,
     {"2017-07-25": ("0.258", "0.500"), "2017-06-20": ("0.251", "0.505")}),
    ("+ all three, trained on departures + new-item events", NOVELTY,
     {"2017-07-25": ("0.262", "0.503"), "2017-06-20": ("0.253", "0.504")}),
    ("a who-switches classifier (is the departure to a never-bought item?), its list gated: the ranker's 3 best "
     "never-bought items above p 0.6, its top 3 otherwise", PROPENSITY,
     {"2017-07-25": ("0.238", "0.486"), "2017-06-20": ("0.235", "0.492")}),
    ("... the ranker's score + 0.5 logit(p) for the never-bought candidates", PROPENSITY,
     {"2017-07-25": ("0.218", "0.525"), "2017-06-20": ("0.216", "0.524")}),
    ("... p as a ranker column (out of fold on the training windows)", PROPENSITY,
     {"2017-07-25": ("0.216", "0.526"), "2017-06-20": ("0.220", "0.526")}),
    ("rule: most popular never-bought item of the type", NOVELTY,
     {"2017-07-25": ("0.290", "0.167"), "2017-06-20": ("0.289", "0.167")}),
    ("rule: own other items of the type, then type popularity", NOVELTY,
     {"2017-07-25": ("0.171", "0.500"), "2017-06-20": ("0.177", "0.503")}),
    ("ceiling: the ranker's 3 best never-bought items (new item) / the chosen item's group known (any departure)",
     PROPENSITY, {"2017-07-25": ("0.333", "0.590"), "2017-06-20": ("0.334", "0.589")}),
)
# The who-switches classifier's AUC on each cut's departures, and the share of them back to an item bought before
CLASSIFIER = {"2017-07-25": ("0.761", "0.449"), "2017-06-20": ("0.771", "0.443")}


def section() -> list[str]:
    head = "| what was tried | " + " | ".join(f"{c}: new item / any departure" for c in CUTS) + " | experiment |"
    lines = ["### What was tried for substitutions", "",
             "In-process on validation cuts before the first served cut (load_tests/served_eval/tried.py holds the "
             "protocol; every figure is from the experiment named, its docstring has the command): hit@3 on every "
             "event of the 35 days after the cut, candidates as serving ranks them.", "",
             head, "|---" * (len(CUTS) + 2) + "|"]
    for what, experiment, figures in ROWS:
        cells = " | ".join(" / ".join(figures[c]) if all(figures[c]) else "not run" for c in CUTS)
        lines.append(f"| {what} | {cells} | {experiment.split('/')[-1]} |")
    auc = ", ".join(f"{c}: AUC {a}, {s} of the departures back to an item bought before"
                    for c, (a, s) in CLASSIFIER.items() if a)
    lines += ["", f"The classifier ({auc}) knows who is likely to try something new, but the ranker already used "
              "it: none of its uses moved either protocol by more than 0.004 except the gate, which trades one "
              "protocol for the other, as training on new-item events does. What limits the new-item target is "
              "the ranking of never-bought items itself: its 3 best never-bought items, with no slot given to an "
              "item bought before, are the ceiling in \"one list for two kinds of shopper\" above, and that "
              "ceiling is what a perfect who-switches call would reach. The any-departure target (1.1x) is within "
              "its ceiling, but no column tried tells the two kinds of shopper apart better than "
              "the ranker's own-history columns do.", ""]
    return lines
