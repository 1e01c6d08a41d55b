"""Ports: the interfaces (typing.Protocol) the use cases need from the outside world."""
