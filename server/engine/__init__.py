"""Processes that turn API changes into instructions, and reconcile what hosts report."""
