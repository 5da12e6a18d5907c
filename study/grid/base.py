"""The schema's base (study.grid.schema): the strict model every grid node derives from, the error a bad grid
raises, the constrained numbers the blocks share. Never imports torch."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from study.errors import StudyInputError


class GridError(StudyInputError, ValueError):
    """Bad input in a grid file: the message names the file, the key path and what was expected."""


class Strict(BaseModel):
    """Base of every schema node: unknown keys are errors, no type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]
Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def distinct_sorted(values: list) -> list:
    """A list of sizes or seeds, sorted; a repeated value is an error (it would plan the same cells twice)."""
    if len(set(values)) != len(values):
        raise ValueError("values must be distinct")
    return sorted(values)
