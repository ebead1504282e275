"""Image archives: ``docker save`` tars and OCI image-layout tars, read (Load)
and written (Save) as streams."""
