"""Wiring only, one module per command: ``run(config, spark) -> summary fields``.

A command reads its settings, calls the stage rooms and returns its summary; the CLI prints the
line. Logic that a test wants to reach lives in the rooms, never here.
"""
