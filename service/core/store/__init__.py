"""SQL access: every query of the service lives in this package, one module per concern."""
