"""The frontend judge: the reference backend, run with ``--judge-frontend FILE``, watches
what the frontend does from the backend's side only (its XenStore nodes as watches show
them, the transport values, every request, the page directories, how far it consumes the
event page, whether its grants are still mappable after it let them go) and judges every
frontend-side clause of clauses.md into a ``results.json`` of the certification format.
It uses only what a backend in a real dom0 sees through the platform seam, and changes
nothing the backend answers."""

from .judge import FrontendJudge

__all__ = ["FrontendJudge"]
