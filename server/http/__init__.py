"""HTTP: routes, payload parsing, the OpenAPI document, the one error mapping, metrics."""
