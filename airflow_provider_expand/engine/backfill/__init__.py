"""The batched backfill (the runbook's "Migrare Date"): its plan, key ranges, the walk of each partition in
short batch transactions, pacing, progress and errors. ``run`` is the entry point."""
