"""The pre-migration backup: taken, judged and restored (``dump``) with the right PostgreSQL client
tools (``pg_tools``)."""
