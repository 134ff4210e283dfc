"""Build-time helpers for the documentation (not part of tokenhub)."""

from __future__ import annotations
