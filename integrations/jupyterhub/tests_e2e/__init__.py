"""End-to-end tests of moat's JupyterHub integration (run with scripts/e2e)."""
