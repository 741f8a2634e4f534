"""Schedules: the cron/interval model, the schedule store, and the leader-only scheduler."""
