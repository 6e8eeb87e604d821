"""The runbook's pre-migration checks (``checks``) and the pooler probe that says whether the engine's
session state survives (``pooler``)."""
