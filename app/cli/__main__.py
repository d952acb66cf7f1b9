"""`python -m app.cli` runs the salesfc command (the API starts workers this way)."""

from app.cli import main

main()
