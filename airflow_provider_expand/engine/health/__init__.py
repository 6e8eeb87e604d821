"""Is the database healthy enough for the next backfill batch? The gates read between batches, the hold
that waits while one is over (and gives up after ``max_hold``), and the bloat control beside them."""
