"""chatcore benchmarks (issue 10): run with `.venv/bin/python -m bench` (see bench/README.md).

Never part of the test run: nothing here is named `test_*`, and pytest only collects `tests/`.
"""
