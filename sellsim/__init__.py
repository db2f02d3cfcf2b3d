"""sellsim: a faithful Zendesk Sell API v2 simulator. Imports nothing from the daemon."""
