"""Training real networks into the terminal phase (label noise now; data, nets, trainer next)."""
