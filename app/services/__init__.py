"""Services shared by the API routes and the CLI."""
