"""Provider adapters: one function per provider API, each calling it with the
provider's official client library and returning text and token usage.

Contract: `call(request) -> Answer`, raising `ProviderError` with a `kind`
of 'timeout', 'rate_limited', 'auth', 'failed', 'bad_answer' or 'refused'. Messages
carry the HTTP status at most, never the key or the provider's own text.
The client is built per call (no plaintext key outlives the call) with
retries off: the gateway decides, and a retry would spend budget twice.
Its HTTP client is cajex.ai.netguard's: internal addresses are refused at
connect time (kind 'refused') and redirects are not followed.
"""

from __future__ import annotations

import dataclasses

from cajex.ai import netguard


@dataclasses.dataclass(frozen=True)
class Request:
    provider: str
    model: str
    api_key: str = dataclasses.field(repr=False)
    base_url: str | None
    system: str
    prompt: str
    max_output_tokens: int
    timeout_seconds: float
    #: The deployment's CAJEX_AI_ALLOW_PRIVATE_HOSTS (cajex.ai.netguard).
    allow_private_hosts: bool = False

    def __repr__(self) -> str:  # never the key
        return f"Request({self.provider}, {self.model})"


@dataclasses.dataclass(frozen=True)
class Answer:
    text: str
    input_tokens: int
    output_tokens: int
    model: str


class ProviderError(Exception):
    def __init__(self, kind: str, status: int | None = None):
        super().__init__(f"provider {kind}" + (f" (HTTP {status})" if status else ""))
        self.kind = kind
        self.status = status


def _kind_for_status(status: int | None) -> str:
    if status == 429:
        return "rate_limited"
    if status in (401, 403):
        return "auth"
    return "failed"


def anthropic_messages(req: Request) -> Answer:
    """Anthropic Messages API (POST /v1/messages)."""
    import anthropic

    client = anthropic.Anthropic(
        api_key=req.api_key,
        base_url=req.base_url or None,
        timeout=req.timeout_seconds,
        max_retries=0,
        http_client=netguard.http_client(req.timeout_seconds, req.allow_private_hosts),
    )
    try:
        msg = client.messages.create(
            model=req.model,
            max_tokens=req.max_output_tokens,
            system=req.system,
            messages=[{"role": "user", "content": req.prompt}],
        )
    except netguard.Refused:
        raise ProviderError("refused") from None
    except anthropic.APITimeoutError:
        raise ProviderError("timeout") from None
    except anthropic.APIStatusError as exc:
        raise ProviderError(
            _kind_for_status(exc.status_code), exc.status_code
        ) from None
    except anthropic.APIConnectionError as exc:
        kind = "refused" if netguard.refused_in(exc) else "failed"
        raise ProviderError(kind) from None
    except anthropic.AnthropicError:
        raise ProviderError("bad_answer") from None
    finally:
        client.close()
    text = "".join(getattr(b, "text", "") or "" for b in (msg.content or []))
    usage = msg.usage
    if usage is None:
        raise ProviderError("bad_answer")
    return Answer(
        text,
        int(usage.input_tokens or 0),
        int(usage.output_tokens or 0),
        msg.model or req.model,
    )


def openai_chat(req: Request) -> Answer:
    """OpenAI chat completions (POST /v1/chat/completions), also for compatible servers."""
    import openai

    client = openai.OpenAI(
        api_key=req.api_key,
        base_url=req.base_url or None,
        timeout=req.timeout_seconds,
        max_retries=0,
        http_client=netguard.http_client(req.timeout_seconds, req.allow_private_hosts),
    )
    try:
        done = client.chat.completions.create(
            model=req.model,
            max_tokens=req.max_output_tokens,
            messages=[
                {"role": "system", "content": req.system},
                {"role": "user", "content": req.prompt},
            ],
        )
    except netguard.Refused:
        raise ProviderError("refused") from None
    except openai.APITimeoutError:
        raise ProviderError("timeout") from None
    except openai.APIStatusError as exc:
        raise ProviderError(
            _kind_for_status(exc.status_code), exc.status_code
        ) from None
    except openai.APIConnectionError as exc:
        kind = "refused" if netguard.refused_in(exc) else "failed"
        raise ProviderError(kind) from None
    except openai.OpenAIError:
        raise ProviderError("bad_answer") from None
    finally:
        client.close()
    if not done.choices or done.usage is None:
        raise ProviderError("bad_answer")
    text = done.choices[0].message.content or ""
    return Answer(
        text,
        int(done.usage.prompt_tokens or 0),
        int(done.usage.completion_tokens or 0),
        done.model or req.model,
    )


#: provider name (cajex.ai_settings.provider) -> adapter
DEFAULT = {
    "anthropic": anthropic_messages,
    "openai": openai_chat,
    "openai_compatible": openai_chat,
}
