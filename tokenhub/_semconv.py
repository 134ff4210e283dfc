"""Every telemetry name tokenhub emits, in one place.

The OpenTelemetry GenAI conventions are experimental and have moved between
repositories; these are the last released names. tokenhub's own names live
under ``tokenhub.``. Nothing here may carry ids, keys or prompts as metric
attributes (cardinality and secrecy).
"""

from __future__ import annotations

from tokenhub.errors import CredentialError, ProviderError, RequestError

__all__ = [
    "DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "error_type",
]

# Spans
ROUTE_SPAN = "tokenhub.route"
OPERATION_CHAT = "chat"

# GenAI attributes
OPERATION_NAME = "gen_ai.operation.name"
PROVIDER_NAME = "gen_ai.provider.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_STREAM = "gen_ai.request.stream"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_SEED = "gen_ai.request.seed"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
RESPONSE_TIME_TO_FIRST_CHUNK = "gen_ai.response.time_to_first_chunk"
USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
TOKEN_TYPE = "gen_ai.token.type"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
ERROR_TYPE = "error.type"

# tokenhub attributes
ROUTE_MODE = "tokenhub.route.mode"
ROUTE_ALIAS = "tokenhub.route.alias"
ROUTE_CHOSEN = "tokenhub.route.chosen_model"
ATTEMPT_COUNT = "tokenhub.attempt.count"
ATTEMPT_INDEX = "tokenhub.attempt.index"
FALLBACK_USED = "tokenhub.fallback_used"
REQUEST_ID = "tokenhub.request_id"
OUTCOME = "tokenhub.outcome"
MODEL = "tokenhub.model"
BACKOFF_EVENT = "tokenhub.backoff"
DELAY_S = "delay_s"

# Metrics
OPERATION_DURATION = "gen_ai.client.operation.duration"
TOKEN_USAGE = "gen_ai.client.token.usage"
TIME_TO_FIRST_CHUNK = "gen_ai.client.operation.time_to_first_chunk"
TIME_PER_OUTPUT_CHUNK = "gen_ai.client.operation.time_per_output_chunk"
ATTEMPTS = "tokenhub.router.attempts"
FAILOVERS = "tokenhub.router.failovers"
RETRIES = "tokenhub.router.retries"
COST = "tokenhub.cost"
BREAKER_STATE = "tokenhub.breaker.state"
RATELIMIT_REMAINING = "tokenhub.ratelimit.remaining"
RATELIMIT_KIND = "tokenhub.ratelimit.kind"
LOG_DROPS = "tokenhub.store.log_drops"

DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))


def error_type(exc: BaseException) -> str:
    """A low-cardinality name for a failure (span ``error.type``, metrics, logs, request log)."""
    if isinstance(exc, ProviderError):
        return exc.error_class.value
    if isinstance(exc, CredentialError):
        return "credential"
    if isinstance(exc, RequestError):
        return "unsupported"
    return "_OTHER"
