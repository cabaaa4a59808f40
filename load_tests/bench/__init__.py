"""The benchmark harness behind `make bench` (`python -m load_tests.bench`): harness.py runs the parts
(streaming.py, serving.py, training.py; locust_sweep.py) and report.py writes docs/BENCHMARKS.md."""
