"""The router's rules: taxonomy, classifier, routing, lifecycle and grants. Pure, no I/O."""
