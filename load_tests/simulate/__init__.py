"""The shopper simulator (`pantry simulate`, and the Locust user of load_tests/simulate/locustfile.py): held-out
Complete Journey visits replayed through the HTTP API in time order, with the outcomes their real baskets imply.

visits.py reads the data, rules.py says which events a visit yields, script.py is one visit as HTTP calls,
schedule.py the ordering rule, runner.py the asyncio driver, cli.py the command. docs/OPERATIONS.md, "The shopper
simulator".
"""
