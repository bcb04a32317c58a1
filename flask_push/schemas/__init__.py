"""The wire shapes of CONTRACT.md section 3 and the arguments of the Python API,
declared once as pydantic models: validation, serialization and the OpenAPI
document all come from them."""
