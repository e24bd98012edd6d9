"""The simulated hypervisor: xenstored, event channels, grant tables (one module each)."""
