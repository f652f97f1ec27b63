"""The job store: tables, database connections and migrations (SQLite or PostgreSQL)."""
