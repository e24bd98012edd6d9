"""Bytes only: models of every sndif and XenStore structure, and constants.

This package imports no harness code (design.md: arrows point down only).
"""
