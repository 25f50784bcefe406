"""persona: turn a written identity into a model that holds it.

The pipeline, one module per stage:
    spec (persona.spec) -> prompts -> responses -> judgements -> dataset -> train -> eval

Start with `persona --help`, or in Python:

    from persona.spec import load_spec
    spec = load_spec("identities/brand.yaml")
"""

__version__ = "0.1.0"
