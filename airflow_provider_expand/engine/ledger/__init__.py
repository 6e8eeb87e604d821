"""The ledger in the target database (``store``), the advisory locks that serialise migrations and
the ledger itself (``lock``), and the run's timeline read back from it (``timeline``)."""
