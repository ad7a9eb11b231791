"""Helpers shared by the tests: the official implementation, model pairs, sample data, owned processes."""
