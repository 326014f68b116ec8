"""Worker modules, one package per model server API."""
