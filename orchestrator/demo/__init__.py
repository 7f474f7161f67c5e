"""The demo and rehearsal: a bundled campaign, scenarios, and the driver that runs them."""
