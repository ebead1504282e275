"""imagestore: a content-addressed store of container images, served over gRPC."""

__version__ = "0.1.0"
