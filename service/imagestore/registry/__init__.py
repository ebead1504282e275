"""OCI Distribution client: endpoints, auth, and the pull and push flows."""
