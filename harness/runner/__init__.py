"""Running cases against the backend under test: the supervisor (case lifecycle, restarts),
the judge of each case (crash, hang, connection, leaks), the ring watchdog, sanitizer
parsing and the per-case verdicts."""
