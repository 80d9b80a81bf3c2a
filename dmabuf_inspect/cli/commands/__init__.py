"""One module per subcommand.

Each module defines `NAME`, a docstring (its help text), `add_arguments(parser)` and
`run(args) -> int`. `cli.py` finds them by listing this package.
"""
