"""The click CLI: parsing and printing only; the work is done by the packages below."""
