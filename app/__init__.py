"""The faces of salesfc: the `salesfc` CLI and the FastAPI service."""
