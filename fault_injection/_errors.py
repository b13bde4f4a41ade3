"""Exceptions a fake LLM client raises, named and shaped like litellm's and openai's.

Code that handles real LLM failures catches these by name and reads the same attributes
(``status_code``, ``message``, ``llm_provider``, ``model``, ``retry_after`` on a rate limit)
that litellm and openai exceptions carry, so a model's error handling can be exercised
without installing either package. They share one base class, `APIError`, as in both
libraries. Malformed replies are not exceptions of the client: the agent's own parsing
raises the stdlib ``json.JSONDecodeError`` or `ToolCallParseError`, as with a real model.
"""

from __future__ import annotations


class APIError(Exception):
    """Base class of every fake LLM client error (litellm: ``APIError``).

    Attributes:
        status_code: the HTTP status the real endpoint would have answered with.
        message: the human-readable message (also ``str(exc)``).
        llm_provider: always ``"fake"``.
        model: the model name the request was for.
    """

    status_code: int = 500

    def __init__(self, message: str, *, model: str = "fake/llm", status_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.model = model
        self.llm_provider = "fake"
        if status_code is not None:
            self.status_code = status_code


class RateLimitError(APIError):
    """HTTP 429: too many requests. ``retry_after`` is the seconds the server asked to wait."""

    status_code = 429

    def __init__(self, message: str, *, model: str = "fake/llm", retry_after: float = 1.0):
        super().__init__(message, model=model)
        self.retry_after = retry_after


class Timeout(APIError):
    """HTTP 408: the client's own request timeout elapsed (litellm: ``Timeout``)."""

    status_code = 408


class APIConnectionError(APIError):
    """The connection failed or was reset before a response arrived."""

    status_code = 500


class InternalServerError(APIError):
    """HTTP 500 from the provider."""

    status_code = 500


class ServiceUnavailableError(APIError):
    """HTTP 503: the provider is overloaded or down."""

    status_code = 503


class ContentPolicyViolationError(APIError):
    """HTTP 400: the provider's content filter refused the request."""

    status_code = 400


class ToolCallParseError(ValueError):
    """A reply's tool call could not be parsed (missing name or non-object arguments)."""


__all__ = [
    "APIConnectionError",
    "APIError",
    "ContentPolicyViolationError",
    "InternalServerError",
    "RateLimitError",
    "ServiceUnavailableError",
    "Timeout",
    "ToolCallParseError",
]
