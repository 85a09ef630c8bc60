from lm import books, encoder  # noqa: F401  (fixtures)
