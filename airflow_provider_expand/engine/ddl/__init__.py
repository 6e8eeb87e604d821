"""The DDL runner: a phase's SQL file grouped into commits (``plan``), applied under bounded lock waits
(``runner``), resumable after a crash (``resume``), with the catalog's view for logs (``inspect``).
``phase`` is the entry point."""
