"""Storage: the article store interface (`store`), SQLite (`sqlite`), seeding a store."""
