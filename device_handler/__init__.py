"""The device side: a power-cut-safe transaction that moves a device to new trust and endpoint."""
