"""Supervision strategies and supervisor actors."""

__all__: list[str] = []
