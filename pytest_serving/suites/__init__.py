"""The built-in test suites, collected whenever ``--serving`` selects targets."""
