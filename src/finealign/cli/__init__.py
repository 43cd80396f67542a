"""The ``finealign`` command line: one module per verb, each with ``register(app)``."""
