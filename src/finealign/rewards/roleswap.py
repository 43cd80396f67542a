"""The role-swapped template of a fine-tuned follow-up model.

A follow-up model predicts what the *user* says after a response. To train it with ordinary
chat SFT (the model learns the assistant turn), the conversation is role-swapped: the user's
turns become assistant turns, the assistant's turns (the response included) become user turns,
and the follow-up / feedback is the next assistant turn. A system message frames the task.
Both `train followup-sft` (training) and the FLR scorer's `finetuned` mode (scoring) use this one
function, so the two always agree.
"""

from __future__ import annotations

from ..data.records import Message, Prompt, as_messages

SYSTEM = ("You are the user in this conversation. After the assistant's reply, say how well it "
          "answered you, as a short follow-up message.")
_SWAP = {"user": "assistant", "assistant": "user"}


def roleswap_messages(prompt: Prompt, response: str) -> list[Message]:
    """Chat messages whose next assistant turn is the user's follow-up to ``response``.

    System messages of the prompt are dropped (the follow-up model has its own).
    """
    msgs = [m for m in as_messages(prompt) if m["role"] != "system"]
    swapped = [{"role": _SWAP[m["role"]], "content": m["content"]} for m in msgs]
    swapped.append({"role": "user", "content": response})
    return [{"role": "system", "content": SYSTEM}] + swapped
