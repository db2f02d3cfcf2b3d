"""Operations: what an operator needs beyond the product itself — retention (old rows pruned
daily in small batches). Sits beside the capabilities; uses ``services`` and ``store``."""
