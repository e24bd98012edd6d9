"""Which clauses bind the frontend (clauses.md tags FE, FE/TS, FE/BE or both) and, for
those a backend can never observe, why."""

from __future__ import annotations

#: Every frontend-side clause of clauses.md §4, in its order.
FE_CLAUSES = (
    "SND-A-01", "SND-A-05", "SND-A-06", "SND-A-07", "SND-A-08", "SND-A-10", "SND-A-11",
    "SND-A-13", "SND-A-14", "SND-A-15", "SND-A-20", "SND-A-21", "SND-A-23",
    "SND-B-01", "SND-B-02", "SND-B-06", "SND-B-07", "SND-B-09", "SND-B-10", "SND-B-11",
    "SND-B-12", "SND-B-14", "SND-B-16",
    "SND-C-01", "SND-C-02", "SND-C-03", "SND-C-05", "SND-C-06", "SND-C-07", "SND-C-08",
    "SND-C-12",
    "SND-D-01", "SND-D-02", "SND-E-05", "SND-E-08", "SND-F-01", "SND-F-07",
    "SND-G-02", "SND-G-03", "SND-H-01", "SND-H-02",
)

#: Clauses no backend can judge, whatever the frontend does: the reason is the verdict's.
INVISIBLE = {
    "SND-A-08": "the names only shape the guest's ALSA card, which a backend never sees",
    "SND-A-20": "needs a backend that fails unrecoverably; the judging backend does not "
                "change its behaviour to provoke it",
    "SND-B-09": "how the frontend pairs a response with its request happens inside the "
                "guest; the judging backend always echoes id and operation",
    "SND-B-16": "needs spurious notifications from the backend, which the judging backend "
                "does not send (it changes nothing it does)",
    "SND-E-05": "period_elapsed is raised inside the guest's ALSA; a backend cannot see it",
    "SND-E-08": "needs unknown event types or a flood from the backend, which the judging "
                "backend does not send (consumption of its events is SND-B-14)",
}

#: Why a clause got no verdict when the run never exercised it.
NOT_EXERCISED = {
    "SND-A-14": "the backend never changed state in a way the frontend had to react to",
    "SND-A-15": "the frontend never tore the connection down",
    "SND-A-21": "the frontend had no fatal error (no error node, no Closing of its own)",
    "SND-B-07": "no request was seen", "SND-B-10": "no request was seen",
    "SND-B-11": "no request was seen", "SND-B-12": "no request was seen",
    "SND-B-02": "no request was seen", "SND-B-06": "no response was sent",
    "SND-B-14": "no event was sent while a stream was open",
    "SND-C-01": "no OPEN was seen", "SND-C-02": "no OPEN was seen",
    "SND-C-03": "no OPEN was seen", "SND-C-05": "no OPEN was seen",
    "SND-C-06": "no OPEN was seen", "SND-C-07": "no OPEN was seen",
    "SND-C-08": "no READ or WRITE was seen",
    "SND-C-12": "no buffer was shared and let go (CLOSE, reopen or teardown)",
    "SND-D-01": "no TRIGGER was seen", "SND-D-02": "no TRIGGER was seen",
    "SND-F-01": "no HW_PARAM_QUERY was seen", "SND-F-07": "no HW_PARAM_QUERY was seen",
    "SND-G-02": "no request was seen",
    "SND-G-03": "the backend answered no request with an error status",
    "SND-H-01": "no volume or mute request was seen",
    "SND-H-02": "no SET_VOLUME or GET_VOLUME was seen",
    "SND-A-10": "the frontend never went Initialised",
    "SND-A-13": "the frontend never went Connected",
    "SND-A-01": "no device was seen", "SND-A-05": "the frontend never went Initialised",
    "SND-A-06": "the frontend never went Initialised",
    "SND-A-07": "no HW_PARAM_QUERY or OPEN was seen",
    "SND-A-11": "the frontend never went Initialised",
    "SND-A-23": "no frontend node was read", "SND-B-01": "no stream was connected",
}
