"""The clock and id doubles, where the other in-memory adapters are (defined in chatcore.testing)."""

from chatcore.testing.doubles import FakeClock, SequentialIds

__all__ = ["FakeClock", "SequentialIds"]
