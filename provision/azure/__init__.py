"""The Resource Manager side and credentials. Only this package imports the Azure SDKs, always inside
functions, so importing it costs nothing until a request is made."""
