"""The admin listener: health, readiness, live config and state, metrics, reload, status page."""
