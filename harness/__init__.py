"""sndif-harness: conformance and fuzzing harness for the Xen para-virtual sound protocol."""

__version__ = "0.1.0"
