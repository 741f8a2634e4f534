"""Cluster duties: the leader lease, heartbeats, reconciliation, plugin reloads across instances."""
