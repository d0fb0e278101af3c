"""Secrets never reach a job record, a log line or a page."""

from __future__ import annotations


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text
