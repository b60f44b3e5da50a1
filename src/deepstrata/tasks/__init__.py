"""Tasks: what each kind of problem plugs into the one training loop."""
