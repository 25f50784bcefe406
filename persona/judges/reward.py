"""The `reward` judge slot: `--judge reward:PATH` scores responses with a reward model trained by
`persona train --method reward`. Training lands in a later release; until then this judge explains that
and exits cleanly instead of failing somewhere deeper."""

from __future__ import annotations

from persona.errors import PersonaError


class RewardJudge:
    def __init__(self, path: str | None = None):
        raise PersonaError("reward-model judges need a reward model trained by `persona train --method reward`, "
                           "which this version of persona does not have yet",
                           hint="use --judge offline (the default), rules or llm")
