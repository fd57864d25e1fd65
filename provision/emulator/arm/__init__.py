"""The emulated Resource Manager: the HTTP service and router, the resources it keeps, one module per provider."""
