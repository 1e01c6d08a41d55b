"""Use cases: one per user intent. Each loads aggregates, lets the domain decide, commits."""
