"""The Rancher API framework: schemas, validation, rendering, queries, auth and errors."""
