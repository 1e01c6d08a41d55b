"""The storage contract, run against every storage adapter listed in conftest.py."""

from chatcore.testing.contracts import StorageContract


class TestStorage(StorageContract):
    pass
