"""The editing prompt: a documented, versioned template.

An editor (a local model or an OpenAI-compatible endpoint) receives the chat messages of
``template.render(prompt, response)`` and answers with the edited response only. Every output
record names the template's ``id`` in its ``meta["template"]``, so edits made with different
prompts are never mixed up silently. A changed wording is a new template with a new version;
published versions are never edited in place.

``EDIT_TEMPLATE_V1`` (id ``finealign-edit-v1``), the default:

* system: the editor's role and the rules: smallest change, everything else verbatim, no
  commentary, output only the corrected response;
* user: the task rules again (small models follow the user turn better than the system turn),
  then the conversation prompt under ``### Prompt``, the response under ``### Response``, and an
  open ``### Corrected response`` heading for the answer.

``template.extract(reply)`` turns a raw reply into the edited text: it strips surrounding
whitespace, a leading ``Corrected response:`` / ``### Corrected response`` heading that some
models repeat, and one pair of enclosing code fences. An empty result means the editor gave no
edit (the job counts it as a failure and retries it on the next run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..data.records import Message, Prompt, prompt_text
from ..errors import FinealignError

__all__ = ["EDIT_TEMPLATE_V1", "DEFAULT_TEMPLATE", "EditTemplate", "TEMPLATES", "get_template"]


@dataclass(frozen=True)
class EditTemplate:
    """A versioned editing prompt.

    ``system`` is the system turn (may be empty); ``user`` is formatted with ``{prompt}`` (the
    conversation flattened to text) and ``{response}`` (the response to edit).
    """

    version: str
    system: str
    user: str

    def __post_init__(self):
        if not re.fullmatch(r"v\d+", self.version):
            raise ValueError(f"template version must look like 'v1', got {self.version!r}")
        for key in ("{prompt}", "{response}"):
            if key not in self.user:
                raise ValueError(f"template {self.version}: user text lacks the {key} placeholder")

    @property
    def id(self) -> str:
        return f"finealign-edit-{self.version}"

    def render(self, prompt: Prompt, response: str) -> list[Message]:
        """Chat messages asking for a minimal edit of ``response`` to ``prompt``."""
        user = self.user.replace("{prompt}", prompt_text(prompt).strip()).replace("{response}", response.strip())
        msgs: list[Message] = []
        if self.system:
            msgs.append({"role": "system", "content": self.system})
        msgs.append({"role": "user", "content": user})
        return msgs

    def extract(self, reply: str | None) -> str:
        """The edited response in a raw editor reply ('' when there is none)."""
        if not reply:
            return ""
        text = reply.strip()
        text = _HEADING.sub("", text, count=1).strip()
        m = _FENCE.fullmatch(text)
        if m:
            text = m.group(1).strip()
        return text


_HEADING = re.compile(r"^(?:#+\s*)?(?:\*\*)?(?:corrected|edited|revised)\s+response(?:\*\*)?\s*:?(?:\*\*)?\s*\n?",
                      re.IGNORECASE)
_FENCE = re.compile(r"```[\w-]*\n(.*?)\n?```", re.DOTALL)


EDIT_TEMPLATE_V1 = EditTemplate(
    version="v1",
    system=(
        "You are a careful editor. You receive a prompt and a response to it. You correct the "
        "response with the smallest possible changes: fix factual errors, wrong statements, unsafe "
        "or unhelpful parts, and keep every other word exactly as it is. You never rewrite the "
        "response from scratch, never add commentary, and you output only the corrected response."
    ),
    user=(
        "Correct the response below with minimal edits. Change only the words that are wrong, "
        "unsupported or unhelpful; copy everything else word for word. If the response is already "
        "good, copy it unchanged. Output only the corrected response, without any explanation.\n\n"
        "### Prompt\n{prompt}\n\n"
        "### Response\n{response}\n\n"
        "### Corrected response\n"
    ),
)

DEFAULT_TEMPLATE = EDIT_TEMPLATE_V1

TEMPLATES: dict[str, EditTemplate] = {t.version: t for t in (EDIT_TEMPLATE_V1,)}


def get_template(version: str) -> EditTemplate:
    """The template of a version (``v1``) or id (``finealign-edit-v1``)."""
    key = version.removeprefix("finealign-edit-")
    if key not in TEMPLATES:
        raise FinealignError(f"unknown edit template {version!r}; known: {', '.join(TEMPLATES)}")
    return TEMPLATES[key]
