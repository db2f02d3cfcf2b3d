"""Operations: what an operator needs beyond the product itself — retention (old rows pruned
daily in small batches) and metrics (Prometheus exposition and a health check). Sits beside
the capabilities; uses ``services`` and ``store``."""
