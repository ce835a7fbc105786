"""Reading a user's configuration: a schema-validated config to typed ``Settings`` with every check
JSON Schema cannot express (resolve), ``meddap init`` (study) and the schema's documentation
(schema_docs).
"""
