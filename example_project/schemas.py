"""Payload schemas of the shop's deferred functions."""

from __future__ import annotations

import re

from pydantic import BaseModel, field_validator

_ADDRESS = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")


class Email(BaseModel):
    """An e-mail to send; ``to`` must look like an address."""

    to: str
    subject: str
    body: str

    @field_validator("to")
    @classmethod
    def _address(cls, value: str) -> str:
        if not _ADDRESS.match(value):
            raise ValueError(f"not an e-mail address: {value!r}")
        return value
