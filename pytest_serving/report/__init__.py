"""Results storage (results.json) and the reports drawn from it."""
