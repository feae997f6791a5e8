"""Storage: the article store interface (`store`), SQLite (`sqlite`), PostgreSQL
(`postgres`), opening one by location (`opening`), schema migrations (`migrate`),
seeding a store (`seed`)."""
