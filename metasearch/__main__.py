"""``python -m metasearch``: the same as the ``metasearch`` command."""

from metasearch.cli import app

app(prog_name="metasearch")
