"""Who may call fastroute, how much, and at what cost: client keys, limits and budgets."""
