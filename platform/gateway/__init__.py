"""The gateway: OpenAI- and Anthropic-compatible HTTP front that classifies and routes."""
