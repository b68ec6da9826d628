"""Request and response shapes of the HTTP API (pydantic), not tables."""
