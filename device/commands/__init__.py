"""One module per `smearscope` sub-command; each defines `register(subparsers)`."""
