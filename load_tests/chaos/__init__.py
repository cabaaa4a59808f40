"""`make chaos`: faults one at a time on the running demo stack under a steady mixed load (docs/RELIABILITY.md)."""
