"""Text fields people type: one type for all of them, so no schema forgets the rule.

Control characters (Unicode category Cc: C0, DEL, C1) and the line/paragraph separators
U+2028/U+2029 have no place in a name, a bib or an e-mail address. A line break in an event name
reaches the `Subject` of every e-mail of that event, where `EmailMessage` raises; refusing it at
the door (422) is the only place where the person who typed it can still fix it.
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

LINE_SEPARATORS = {"\u2028", "\u2029"}


def refuse_control_characters(value: str) -> str:
    for ch in value:
        if unicodedata.category(ch) == "Cc" or ch in LINE_SEPARATORS:
            raise ValueError(f"must not contain control characters such as line breaks or tabs (found U+{ord(ch):04X})")
    return value


# The same rule for the schema's readers (and API fuzzers): no C0, DEL, C1 or U+2028/U+2029.
PLAIN_TEXT_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u2028\\u2029]*$"

# Use this for every free-text field of a request (length limits stay with the field).
PlainText = Annotated[str, AfterValidator(refuse_control_characters),
                      Field(json_schema_extra={"pattern": PLAIN_TEXT_PATTERN})]
