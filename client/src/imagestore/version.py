"""The version of imagestore: the server and the client are released together."""

__version__ = "0.1.0"
