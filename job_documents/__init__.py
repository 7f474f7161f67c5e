"""The job document contract between operators and devices: schema, catalog, checks."""
