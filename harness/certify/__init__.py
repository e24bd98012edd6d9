"""Certification: the pytest plugin that turns suite outcomes into per-clause verdicts, and
the ``certify`` command over it."""
