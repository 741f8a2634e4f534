"""The search-index sink: sends change capture's index actions to Elasticsearch (imported lazily)."""
