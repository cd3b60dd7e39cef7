"""Wire dialects: speak OpenAI's or Anthropic's rate-limit headers and error bodies.

The integrations speak the IETF dialect by default (``RateLimit-Policy``/``RateLimit``
headers, RFC 9457 problem bodies). ``dialect="openai"`` or ``dialect="anthropic"`` on
`QuotaMiddleware`, a `Route` or the FastAPI `RateLimit` dependency makes every response
quotaguard writes look like the provider's, so the customers' official SDKs raise their
usual errors with quotaguard's sentence and can read the limits from the headers.
"""

from .config import Dialect, dialect_of
from .responses import JSON_CONTENT_TYPE, DialectResponses, responses_by_route, responses_for

__all__ = [
    "JSON_CONTENT_TYPE",
    "Dialect",
    "DialectResponses",
    "dialect_of",
    "responses_by_route",
    "responses_for",
]
