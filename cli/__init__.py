"""layerpilot command-line interface (Typer)."""
