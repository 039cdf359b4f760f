"""Fleet files that ship with the package (data only)."""
