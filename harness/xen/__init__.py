"""The platform seam. Everything above this package sees Xen only through ``api``."""
