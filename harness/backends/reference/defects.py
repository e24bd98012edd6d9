"""The defect catalogue: realistic backend bugs the reference backend can be told to have
(``python -m harness.backends.reference --defect NAME``), so that a conformance suite can
prove it catches a wrong backend.

Each defect names the clauses of ``shared/spec/clauses.md`` it violates and its area (A-H).
The active set travels down to the sans-IO cores as one small :class:`Defects` object;
every hook is a single ``if defects.has("name")`` where the bug would live, and with no
defect set the backend behaves exactly as BEHAVIOUR.md says.
"""

from __future__ import annotations

from harness.defect_catalogue import AREAS, CLAUSE_ID, Defect, DefectSet, UnknownDefect, find
from harness.defect_catalogue import defect as _d

CATALOGUE: tuple[Defect, ...] = (
    # (A) XenStore / XenBus state
    _d("skip-initwait", "A", "SND-A-09",
       "stays Initialising until the frontend moves first, so the handshake never starts"),
    _d("no-initwait-after-fe-close", "A", "SND-A-16 SND-A-15",
       "on FE Closing/Closed tears down but goes Closed instead of back to InitWait"),
    _d("ignore-fe-restart", "A", "SND-A-17",
       "ignores the FE going back to Initialising: stays Connected on the old pages"),
    _d("no-closed-on-removal", "A", "SND-A-18",
       "on toolstack removal tears down but never writes state Closed"),
    _d("require-version-node", "A", "SND-A-04",
       "waits for the FE 'version' node (never written by Linux) before connecting"),
    # (B) rings
    _d("no-req-event-rearm", "B", "SND-B-03",
       "never re-arms req_event before sleeping: every request after the first goes "
       "unnoticed"),
    _d("wrong-response-id", "B", "SND-B-08 SND-B-09",
       "answers with the request id plus one"),
    _d("operation-not-echoed", "B", "SND-B-08 SND-B-09",
       "leaves the response operation 0 (OPEN) instead of echoing it"),
    _d("duplicate-response", "B", "SND-B-08",
       "answers every request twice (a retry path that re-sends the response)"),
    _d("responses-out-of-order", "B", "SND-B-08",
       "answers a batch of pipelined requests in reverse order (allowed: each is still "
       "answered once; the order is AMBIG-11, reported, not judged)", "AMBIG-11"),
    _d("lose-request-under-load", "B", "SND-B-08",
       "never answers requests consumed while more than 4 are queued (a queue overflowing)"),
    _d("no-notify-after-response", "B", "SND-B-05",
       "pushes responses without notifying the request port"),
    _d("reject-nonzero-reserved", "B", "SND-B-12",
       "rejects requests whose reserved bytes are not zero (Linux leaves stale bytes)"),
    _d("event-overwrites-unconsumed", "B", "SND-B-13",
       "writes CUR_POS events without looking at in_cons, overwriting unread ones"),
    # (C) buffers
    _d("ignore-later-directory-pages", "C", "SND-C-02 SND-C-04",
       "supports one directory page only: buffers needing more are rejected"),
    _d("trust-offset-length", "C", "SND-C-09 SND-G-07",
       "no bounds check on READ/WRITE: out-of-range regions succeed (clamped) instead "
       "of -EINVAL"),
    _d("keep-mapped-after-close", "C", "SND-C-12",
       "answers CLOSE but keeps the buffer mapped until the next OPEN or disconnect"),
    _d("follow-cyclic-directory", "C", "SND-C-04 SND-G-07",
       "walks the directory chain to its end first, with no cycle check: a cyclic chain "
       "is followed for 20000 pages"),
    _d("reject-close-when-not-open", "C", "SND-C-12",
       "answers CLOSE on a stream that is not open with -EBADF"),
    _d("open-while-open-rejected", "C", "SND-C-13",
       "answers OPEN on an open stream with -EBUSY instead of an implicit CLOSE"),
    # (D) triggers
    _d("start-after-stop-fails", "D", "SND-D-04",
       "START after STOP without a new OPEN fails with -EINVAL"),
    _d("start-while-paused-fails", "D", "SND-D-05",
       "START while PAUSED fails with -EINVAL"),
    _d("stop-while-paused-fails", "D", "SND-D-03",
       "STOP while PAUSED fails with -EINVAL"),
    _d("close-while-running-fails", "D", "SND-D-08",
       "CLOSE while RUNNING or PAUSED fails with -EBUSY and the stream stays open"),
    _d("unknown-trigger-accepted", "D", "SND-D-01 SND-D-07",
       "answers an unknown trigger type with status 0"),
    _d("no-drain-event", "D", "SND-D-06",
       "no event for the end of written data off a period boundary: drains never finish"),
    # (E) events
    _d("positions-modulo-buffer", "E", "SND-E-03",
       "reports positions modulo buffer_sz instead of cumulative since OPEN"),
    _d("position-goes-back", "E", "SND-E-03",
       "every second CUR_POS reports a position two periods back"),
    _d("events-while-paused", "E", "SND-E-06 SND-E-01",
       "the position keeps advancing (with events) while PAUSED"),
    _d("events-while-stopped", "E", "SND-E-06 SND-E-01",
       "the position keeps advancing (with events) after STOP"),
    _d("events-with-period-zero", "E", "SND-E-02",
       "sends CUR_POS every half buffer when OPEN's period_sz is 0"),
    _d("event-id-gaps", "E", "SND-E-04",
       "skips one event id after every batch of events"),
    _d("event-ids-reset-on-open", "E", "SND-E-04",
       "restarts event ids at 0 at every OPEN"),
    _d("wrong-cadence", "E", "SND-E-02",
       "sends CUR_POS every 2 * period_sz octets"),
    _d("flood-event-ring", "E", "SND-E-02 SND-E-01",
       "fills all free event slots with repeats of the newest position"),
    _d("position-beyond-written", "E", "SND-E-07",
       "the playback position advances with time alone, past the octets written"),
    # (F) negotiation
    _d("hw-query-wider-than-asked", "F", "SND-F-02",
       "answers HW_PARAM_QUERY with its whole space, not intersected with the request"),
    _d("hw-query-not-idempotent", "F", "SND-F-05",
       "every answer shrinks period max by one frame: re-querying never converges"),
    _d("hw-query-success-on-empty", "F", "SND-F-06",
       "answers an empty intersection with status 0 and an empty space"),
    _d("hw-query-changes-state", "F", "SND-F-04",
       "a HW_PARAM_QUERY closes an open stream"),
    # (G) errors
    _d("success-for-invalid-open", "G", "SND-C-15 SND-G-01",
       "answers an invalid OPEN with status 0 (but the stream stays closed)"),
    _d("positive-status", "G", "SND-G-01",
       "failures carry +errno instead of -errno"),
    _d("non-errno-status", "G", "SND-G-05",
       "failures carry -524 (Linux-internal ENOTSUPP), not a Xen errno"),
    _d("unknown-op-no-response", "G", "SND-G-04 SND-B-08",
       "consumes a request with an unknown operation and never answers it"),
    _d("abort-on-trigger-before-open", "G", "SND-G-07 SND-D-07",
       "the process aborts (SIGABRT) on TRIGGER for a stream that is not open"),
    _d("hang-on-hw-query", "G", "SND-G-07 SND-F-04",
       "stops serving the stream's ring forever once a HW_PARAM_QUERY arrives"),
    # (H) volume and mute
    _d("get-volume-not-written", "H", "SND-H-03",
       "answers GET_VOLUME with 0 without writing the values"),
    _d("set-volume-ignored", "H", "SND-H-03",
       "answers SET_VOLUME with 0 without reading the values"),
    _d("volume-without-open-succeeds", "H", "SND-H-05 SND-H-01",
       "volume/mute on a stream that is not open answer 0"),
    _d("volume-no-bounds-check", "H", "SND-H-05",
       "volume/mute regions outside the buffer answer 0 (the access is dropped)"),
)

BY_NAME: dict[str, Defect] = {d.name: d for d in CATALOGUE}


def lookup(name: str) -> Defect:
    return find(BY_NAME, name, "'sndif-harness defects' lists them")


class Defects(DefectSet):
    """The active defects, handed to every core. ``has`` rejects names outside the
    catalogue, so a misspelt hook fails loudly instead of never firing."""

    BY_NAME = BY_NAME


#: The correct backend.
NO_DEFECTS = Defects()

__all__ = ["AREAS", "BY_NAME", "CATALOGUE", "CLAUSE_ID", "NO_DEFECTS", "Defect", "Defects",
           "UnknownDefect", "lookup"]
