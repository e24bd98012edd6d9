"""Fuzzing the backend under test (issue 12): strategies derived from the models
(:mod:`.fields`, :mod:`.strategies`), a model of one stream's expected state
(:mod:`.model`), the oracles (:mod:`.oracles`), the driver that sends a request and checks
it (:mod:`.driver`), the Hypothesis state machine and its rule groups (:mod:`.machine`), a
fast request loop (:mod:`.requests_loop`), reproducers and the findings summary
(:mod:`.reproducer`), a campaign with a budget (:mod:`.campaign`), over several worker
processes with a shared example database (:mod:`.parallel`, ``sndif-harness fuzz``), the
findings as certification results (:mod:`.results`), the catch table over the defect
catalogue (:mod:`.catalogue`), and edge-coverage feedback from an instrumented C backend
(:mod:`.coverage`)."""
