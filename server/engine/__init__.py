"""The processes behind the API: the runner, the operations it carries out, reconcile."""
