"""OpenTelemetry traces, optional (`orchestrator[otel]`): `build.build(section)` gives the facade the app hands on."""
