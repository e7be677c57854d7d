"""Interlook: publish container-platform services to the network around them."""

__version__ = "0.1.0"
