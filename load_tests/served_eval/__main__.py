"""`python -m load_tests.served_eval`: the same command as `pantry evaluate-served`."""

from load_tests.served_eval.cli import evaluate_served

evaluate_served(prog_name="python -m load_tests.served_eval")
