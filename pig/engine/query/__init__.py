"""Query: one engine that turns a request into hits."""
