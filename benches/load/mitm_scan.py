"""mitmproxy addon for the aigate load harness (benches/load/run.sh).

Gives mitmproxy work comparable to aigate's inspection: pull the prompt text out of an OpenAI
chat body and scan it with a handful of PII/secret regexes (email, card number with Luhn, US SSN,
AWS / OpenAI / GitHub keys, PEM private keys). Findings are attached to the flow's metadata
(never logged), so the cost is the scan, not the terminal.

It also resolves the AI host names the harness uses to loopback (a private hosts file, like the
one squid gets): CONNECT names the real host and the origin's port, SNI and Host stay the catalog
name, so upstream verification still checks the origin certificate against it. Changing the
server address in a `server_connect` hook instead defeats mitmproxy's upstream connection reuse
(one new upstream connection per request, then a stall).
"""

import json
import re
import socket

LOOPBACK_HOSTS = {"api.openai.com", "bench.test"}

_getaddrinfo = socket.getaddrinfo


def _loopback_getaddrinfo(host, *args, **kwargs):
    if isinstance(host, bytes):
        host = host.decode()
    if isinstance(host, str) and host.lower().rstrip(".") in LOOPBACK_HOSTS:
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_getaddrinfo

PATTERNS = {
    "EMAIL": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "CREDIT_CARD": re.compile(r"\b(?:\d[ -]?){13,19}\b"),
    "US_SSN": re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b"),
    "AWS_KEY": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "OPENAI_KEY": re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}\b"),
    "GITHUB_TOKEN": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36}\b"),
    "PRIVATE_KEY": re.compile(r"-----BEGIN (?:RSA |EC |OPENSSH )?PRIVATE KEY-----"),
}


def luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def prompt_text(body: bytes) -> str:
    """The message contents of an OpenAI chat body, or the raw text when it is not one."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")
    parts = []
    for message in doc.get("messages", []) if isinstance(doc, dict) else []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
    return "\n".join(parts)


def scan(text: str) -> dict:
    counts = {}
    for kind, pattern in PATTERNS.items():
        for match in pattern.finditer(text):
            if kind == "CREDIT_CARD":
                digits = re.sub(r"\D", "", match.group())
                if not 13 <= len(digits) <= 19 or not luhn(digits):
                    continue
            counts[kind] = counts.get(kind, 0) + 1
    return counts


class Scan:
    def request(self, flow):
        body = flow.request.raw_content or b""
        if body:
            flow.metadata["findings"] = scan(prompt_text(body))


addons = [Scan()]
