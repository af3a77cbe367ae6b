"""One module per subcommand. Each exposes ``run(recipe, ...) -> dict`` (the results.json content)."""
