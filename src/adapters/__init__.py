"""Adapters: implementations of chatcore's ports, one package per technology."""
