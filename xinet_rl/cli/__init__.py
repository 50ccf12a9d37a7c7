"""Command-line tools: thin wrappers that parse, call the library and report."""
