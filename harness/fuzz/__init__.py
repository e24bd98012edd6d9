"""Fuzzing the backend under test (issue 12): strategies derived from the models
(:mod:`.fields`, :mod:`.strategies`), a model of one stream's expected state
(:mod:`.model`), the oracles (:mod:`.oracles`), the driver that sends a request and checks
it (:mod:`.driver`), the Hypothesis state machine (:mod:`.machine`), a fast request loop
(:mod:`.requests_loop`), reproducers and the findings summary (:mod:`.reproducer`), and a
campaign with a budget (:mod:`.campaign`, ``sndif-harness fuzz``)."""
