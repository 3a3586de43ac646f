"""Frame -> events, one module per family of gateway topics (pure)."""
