"""Config at the edge: pydantic models for scenario and endpoint YAML, turned into frozen core types."""
