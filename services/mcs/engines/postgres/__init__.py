"""The PostgreSQL engine (issue 16): psycopg 3 with its pool, SKIP LOCKED claims, LISTEN/NOTIFY wake-ups."""
