"""store.sync: the sync engine's units of work, one crossing of the store bridge each."""
