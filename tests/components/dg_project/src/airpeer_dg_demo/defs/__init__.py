"""Component folders scaffolded by the tests go here."""
