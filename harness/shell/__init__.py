"""Interactive exploration: ``sndif-harness shell`` builds a world and hands over a
Python prompt with the sndif models, the connected card and a few helpers in scope."""

from harness.shell.console import banner, namespace, run_code, run_shell

__all__ = ["banner", "namespace", "run_code", "run_shell"]
