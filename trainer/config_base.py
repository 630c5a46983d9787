"""What every config section shares: unknown keys and non-finite numbers are refused, and one dtype spelling."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, StringConstraints

# The one spelling of a floating-point width in every key; trainer/precision.py maps it to torch dtypes (DTYPES).
DtypeName = Literal["bf16", "fp16", "fp32"]
TORCH_DTYPE_SPELLINGS = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
# The NAME of an environment variable (an API key's: `trainer/redact.py` reads it); never a value.
EnvVarName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # `.inf` and `.nan` in YAML are mistakes
