"""What a model's name says about it, for models nobody declared or discovered."""

from __future__ import annotations

import re

_CODING = re.compile(r"cod(e|er|estral)|devstral|starcoder|deepseek-coder|codegemma|codellama|qwen.*coder", re.I)

#: families that take reasoning settings (effort, thinking); other models refuse those fields
_REASONING = re.compile(
    r"(?:^|/)(?:o[1-9](?:-|$)|gpt-5|gpt-oss|codex|claude-(?:opus|sonnet)-4|claude-3-7-sonnet|claude-haiku-4-5"
    r"|deepseek-r1|deepseek-reasoner|qwq|qwen3(?!-coder)|magistral|phi4-reasoning|gemini-(?:2\.5|3)"
    r"|grok-(?:3-mini|4)|kimi-k2-thinking|glm-4\.[5-9]|cogito|exaone-deep)", re.I)


def looks_like_coder(*names: str) -> bool:
    return any(_CODING.search(n) for n in names if n)


def looks_like_reasoner(name: str) -> bool:
    return bool(_REASONING.search(name))
