"""Developer tooling: the embedded stack, the demo and its gallery, `dev up`.

Never imported by the service itself (`app`, `pipeline`, `handlers`): a test pins it.
"""
