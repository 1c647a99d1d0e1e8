"""Implementations of the `lumiku-bgremover` sub-commands that outgrew `cli.py`.

Each module offers `add_arguments(parser)` and `async run(settings, args) -> int`
(the exit status); `cli.py` wires them into the argument parser.
"""
