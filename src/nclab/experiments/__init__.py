"""Named experiments: the demo now; the seed papers' reproductions as they land."""
