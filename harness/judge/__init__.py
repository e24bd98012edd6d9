"""Judgements the conformance suites share: pure functions that turn what the reference
frontend saw (statuses, HW_PARAM_QUERY answers, CUR_POS timing) into problems, each with
its evidence, plus the small stream helpers the suites drive the frontend with.

* :mod:`status` — is a response status 0 or a ``-XEN_Exx`` a guest may see (SND-G-01/G-05)?
* :mod:`hw_query` — is a HW_PARAM_QUERY answer a non-empty subset of the request and of the
  card (SND-F-02/F-06)?
* :mod:`pacing` — CUR_POS cadence judged statistically over many intervals (SND-E-02).
* :mod:`streams` — OPEN parameters from a stream's configuration, opening and pumping a
  stream, raw OPENs with a buffer of our own.
* :mod:`watch` — events and violations of one stream since a mark.
"""
