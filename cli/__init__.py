"""The `layerpilot` command line: one Typer module per command group, joined in `cli.main`.

Imports `service` (never the reverse); heavy service modules are imported inside the commands, so
`--help` and bad input answer at once.
"""
