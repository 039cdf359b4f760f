"""Teams: keys, limits, budgets and usage, kept in Redis."""
