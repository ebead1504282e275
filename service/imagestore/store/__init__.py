"""The local image store: blob files, the SQLite catalog, leases and garbage
collection, and the image operations built on them. No gRPC here."""
