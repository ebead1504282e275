# Generated code only: `make protos` writes this package from protos/imagestore/v1/.
