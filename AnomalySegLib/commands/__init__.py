"""CLI subcommands, one module each.

Every module here defines ``register(subparsers)``, which adds its subparser and sets
``func=run`` on it; :mod:`AnomalySegLib.cli` discovers the modules, so adding a command means
adding a file.
"""
