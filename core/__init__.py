"""The ticket core: the one place where ticket state changes (no discord, no mail libraries)."""
