"""Span and attribute names: a contract between the gateway, the engines and whoever queries
the traces (dashboards, alerts), so they are spelled once, here.

gen_ai.* attributes follow the OpenTelemetry semantic conventions for generative AI
(https://opentelemetry.io/docs/specs/semconv/gen-ai/gen-ai-spans/); gemma_fleet.* are ours.
"""

from __future__ import annotations

# The span tree of one request (docs/observability.md draws it).
REQUEST = "gateway.request"  # SERVER, root
AUTH = "gateway.auth"
DOCUMENT_READ = "gateway.document_read"
QUOTA = "gateway.quota"
ROUTE = "gateway.route"
MEDIA_FETCH = "gateway.media_fetch"
DISPATCH = "gateway.dispatch"  # ends when the reply or the stream ends
ENGINE_GENERATE = "engine.generate"  # in the engine's process, child of gateway.dispatch

# Attributes
HTTP_ROUTE = "http.route"
TEAM = "gemma_fleet.team"
REQUEST_ID = "gemma_fleet.request_id"  # the answer's request-id header
POOL = "gemma_fleet.pool"
ROUTE_REASON = "gemma_fleet.route_reason"
PROMPT_TOKENS_ESTIMATE = "gemma_fleet.prompt_tokens_estimate"
MAX_OUTPUT_TOKENS = "gemma_fleet.max_output_tokens"
DISPATCH_ATTEMPTS = "gemma_fleet.dispatch.attempts"
# seconds a whole answer with logprobs waited for its turn at the pool (set when it waited)
DISPATCH_TURN_WAIT = "gemma_fleet.dispatch.turn_wait_s"
STREAM = "gemma_fleet.stream"
MEDIA_ITEMS = "gemma_fleet.media_items"
DOCUMENT_PAGES = "gemma_fleet.document_pages"
DOCUMENT_SOURCE = "gemma_fleet.document_source"  # read, cache or shared (PageSource)
REQUEST_MODEL = "gen_ai.request.model"
RESPONSE_MODEL = "gen_ai.response.model"
OPERATION = "gen_ai.operation.name"
INPUT_TOKENS = "gen_ai.usage.input_tokens"
OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
FINISH_REASONS = "gen_ai.response.finish_reasons"
ERROR_TYPE = "error.type"
