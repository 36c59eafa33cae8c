"""Execution: change sets turned into individual SCIM calls (the executor), and the target read in full (reconcile)."""
