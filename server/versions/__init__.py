"""Model versions over time: verification, roles, the live set and its commit lock,
backfill, the lifecycle that loads, switches and retires."""
