"""Sub-commands of the ``towerlight`` CLI, one module each, each with ``register(subparsers)``."""
