"""What each ``metasearch`` command does, kept apart from argument parsing."""
