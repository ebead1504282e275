"""The store served over the OCI Distribution API (HTTP/1.1, aiohttp), beside gRPC.

One module per concept: ``names`` (repository paths and the store's canonical
names), ``errors`` (the spec's error codes and body), ``limits`` (the
endpoint's bounds, as server options), ``access`` (credentials, admission and
the access log, as middlewares), ``pull`` (the pull category's handlers) and
``app`` (the route table and the listener's life cycle).
"""
