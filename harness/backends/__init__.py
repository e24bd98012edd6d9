"""Backends the harness runs the frontend against: the reference backend
(:mod:`harness.backends.reference`), and in time the supervisor of external backends."""
