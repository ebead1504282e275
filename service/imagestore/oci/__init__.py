"""OCI and Docker image vocabulary: references, digests, media types, platforms,
manifests, indexes and configs. Pure parsing and validation, no I/O."""
