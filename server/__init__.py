"""The recommendation service. Its rooms, lowest first: `errors`; `storage` and
`inference`; `versions`; `settings` and `service`; `http`; `app` (docs/architecture.md)."""
