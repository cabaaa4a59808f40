"""`make chaos`: faults applied one at a time to a running demo stack under a steady mixed load (docs/RELIABILITY.md)."""
