"""Post-phase verification (the runbook's "Verificări"): SQL expectations, RLS, latency, health and the
automatic checks (``checks``)."""
