"""The served-path evaluation (`pantry evaluate-served`, `make evaluate-served`): a `pantry demo --until CUT` per
cut, asked over HTTP for every case of training/served_cases.py, next to the same cases in-process and the rules."""
