"""``dfgr study``: models x data sets x a tuning grid x seeds, resumable, chosen on validation."""
