"""Test kit shipped with the core: fakes for time and ids, and contract suites for every port."""
