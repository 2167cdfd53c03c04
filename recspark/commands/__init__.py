"""One module per command: ``run(config, spark) -> summary fields``; the CLI prints the line."""
