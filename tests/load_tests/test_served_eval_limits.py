"""The served-path report's substitution limits (load_tests/served_eval/explain.py `substitution_limits`) and its
"What was tried" table (tried.py), on hand-made figures: no service, no data."""

from __future__ import annotations

from load_tests.served_eval import tried
from load_tests.served_eval.evaluate import SERVED, SERVED_TRUTH_GROUP
from load_tests.served_eval.explain import substitution_limits
from training import served_cases as sc


def _task(ceiling: float, never_rule: float, own_rule: float, share: float) -> dict:
    def m(v: float) -> dict:
        return {"value": v, "low": v - 0.02, "high": v + 0.02}

    hit = "{}: hit@3 where the chosen item was {}"
    return {"methods": {SERVED: m(0.2), SERVED_TRUTH_GROUP: m(ceiling), sc.NEVER_BOUGHT_POPULAR: m(never_rule),
                        sc.OWN_THEN_POPULAR: m(own_rule)},
            "diagnostics": {"chosen item bought before (share of cases)": share,
                            hit.format("served", "bought before"): 0.87, hit.format("served", "never bought"): 0.25,
                            hit.format("own-items rule", "bought before"): 0.88,
                            hit.format("own-items rule", "never bought"): 0.19}}


def test_the_ceiling_is_compared_with_the_never_bought_rule_at_each_cut() -> None:
    # cut 1: ceiling 0.33 / rule 0.30 = 1.100x (below 1.2x); cut 2: 0.36 / 0.29 = 1.241x (not below)
    new = [_task(0.33, 0.30, 0.17, 0.0), _task(0.36, 0.29, 0.17, 0.0)]
    anyd = [_task(0.58, 0.17, 0.50, 0.45), _task(0.59, 0.16, 0.48, 0.44)]
    (line,) = substitution_limits(new, anyd)
    assert "0.330 (0.310-0.350) = 1.100x, 0.360 (0.340-0.380) = 1.241x the never-bought rule" in line
    assert "0.580 (0.560-0.600) = 1.160x, 0.590 (0.570-0.610) = 1.229x the own-items rule" in line
    assert "below 1.2x the never-bought rule at 1 of 2 cuts" in line
    assert "0.45, 0.44 went back to an item bought before" in line


def test_a_run_without_the_ceiling_gets_no_limits_bullet() -> None:
    task = _task(0.33, 0.30, 0.17, 0.0)
    del task["methods"][SERVED_TRUTH_GROUP]
    assert substitution_limits([task], [task]) == []


def test_what_was_tried_has_a_figure_pair_or_not_run_per_cut_and_names_its_experiment() -> None:
    lines = tried.section()
    table = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert all(c in table[0] for c in tried.CUTS)
    assert len(table) == len(tried.ROWS) + 1
    for (what, experiment, figures), line in zip(tried.ROWS, table[1:], strict=True):
        assert line.startswith(f"| {what} |") and line.endswith(f"| {experiment.split('/')[-1]} |")
        for cut in tried.CUTS:
            new, anyd = figures[cut]
            assert (f"{new} / {anyd}" in line) if new and anyd else "not run" in line
