"""Thin Typer wrappers: parse options, load the config, call the API in the pipeline package."""
