"""The gRPC service: handlers, server bootstrap, interceptors, reflection."""
