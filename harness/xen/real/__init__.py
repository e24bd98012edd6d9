"""Platform-seam implementations for a real Xen host."""
