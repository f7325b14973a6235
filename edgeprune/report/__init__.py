"""Reports for people (markdown, terminal tables, HTML) and machines (JSON, CSV)."""
