"""The chat domain: aggregates, permissions, events and errors, free of I/O and frameworks."""
