"""Concurrent index builds: the spec checked against the catalog (``spec``), one ``CONCURRENTLY``
statement run safely (``concurrently``) and watched from a second connection (``progress``), and the
builder that ends with a VALID index (``build``)."""
