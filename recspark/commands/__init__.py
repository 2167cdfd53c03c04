"""Wiring only, one module per command, each with one ``STAGE``
(:class:`recspark.commands.stage.Stage`): its name, the config sections it reads and
``run(config, spark) -> StageResult``.

A command reads its settings, calls the stage rooms and returns its result; the CLI wraps every
stage once (prechecks, Spark, timing) and prints the line. Logic that a test wants to reach lives
in the rooms, never here.
"""
