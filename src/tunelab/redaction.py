"""Credentials kept out of what tunelab writes: logged configs, tags, records, messages.

A key is secret by its name, split into words at ``_``, ``-``, ``.``, spaces and
camelCase: its last word is a secret word (``hf_token``, ``password``, ``auth``) or its
last two words are a secret pair (``api_key``, ``secret_access_key``). Words, not
substrings: ``max_new_tokens``, ``num_virtual_tokens``, ``tokenizer`` and
``token_counter`` are not secret. Inside any string: ``user:password@`` of a URL,
secret ``name=value`` pairs (``?api_key=..&sig=..``, ``;AccountKey=..``) and well-known
token shapes (``hf_...``, ``sk-...``, ``ghp_...``).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import unquote_plus

MASK = "***"
# Secret when the key's last word is one of these (or, joined into one word, ends so).
SECRET_WORDS = frozenset(
    {
        "apikey",
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "credential",
        "credentials",
        "passphrase",
        "passwd",
        "password",
        "secret",
        "secrets",
        "sig",
        "signature",
        "token",
    }
)
SECRET_SUFFIXES = ("token", "password", "passwd", "secret", "apikey", "accesskey", "privatekey")
# Secret when the key's last two words are one of these.
SECRET_PAIRS = frozenset(
    {
        ("access", "key"),
        ("account", "key"),
        ("api", "key"),
        ("client", "secret"),
        ("connection", "string"),
        ("customer", "key"),
        ("encryption", "key"),
        ("private", "key"),
        ("secret", "key"),
        ("signing", "key"),
    }
)
# Query parameters that carry a credential without naming it (Google's ?key=).
SECRET_PARAMS = frozenset({"key"})
# Config fields whose keys are data (column names, split names, labels), not field names.
DATA_KEYED = frozenset({"columns", "source_splits", "verbalizer"})

# user[:password]@ of a URL: up to the last @ before the path, query or fragment.
URI_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<cred>[^/?#\s]+)@", re.I)
# name=value at the start, after ? & ; or whitespace (query strings, connection strings).
NAME_VALUE = re.compile(r"(?:^|(?<=[?&;\s]))(?P<name>[A-Za-z0-9_.%-]+)=(?P<value>[^&#;\s]*)")
SECRET_VALUE = re.compile(
    r"\b(?:hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}"
    r"|github_pat_[A-Za-z0-9_]{20,}|glpat-[A-Za-z0-9_-]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|(?:AKIA|ASIA)[0-9A-Z]{16})\b"
)
BEARER = re.compile(r"\b(?P<kind>Bearer)\s+[A-Za-z0-9._~+/-]{16,}=*")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
_SEPARATORS = re.compile(r"[_\-.\s]+")


def words(key: str) -> list[str]:
    """A key's words, lower-cased: ``X-Amz-Signature`` -> x, amz, signature."""
    return [w for w in _SEPARATORS.split(_CAMEL.sub("_", key).lower()) if w]


def is_secret_key(key: str) -> bool:
    """True for credential-like names (``hf_token``, ``apiKey``), not ``max_new_tokens``."""
    parts = words(key)
    if not parts:
        return False
    last = parts[-1]
    if last in SECRET_WORDS or last.endswith(SECRET_SUFFIXES):
        return True
    return len(parts) > 1 and (parts[-2], last) in SECRET_PAIRS


def is_secret_param(name: str) -> bool:
    """A query or connection-string parameter that holds a credential."""
    name = unquote_plus(name)
    return is_secret_key(name) or name.lower() in SECRET_PARAMS


def redact_text(text: str) -> str:
    """``text`` with URL user-info, secret parameters and token-shaped words masked."""
    text = URI_CREDENTIALS.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    text = NAME_VALUE.sub(
        lambda m: (
            f"{m['name']}={MASK}" if m["value"] and is_secret_param(m["name"]) else m.group(0)
        ),
        text,
    )
    text = BEARER.sub(lambda m: f"{m['kind']} {MASK}", text)
    return SECRET_VALUE.sub(MASK, text)


def redact(value: Any, key: str = "") -> Any:
    """Hide credentials in a value (dicts and lists walked); ``key`` is the value's name.

    A secret-named key masks its whole value (numbers too; booleans and None stay, they
    hold no secret), so a redacted config still has every field of the original.
    """
    if isinstance(value, dict):
        data_keyed = key in DATA_KEYED
        return {k: redact(v, "" if data_keyed else str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if value is None or isinstance(value, bool):
        return value
    secret = bool(key) and is_secret_key(key)
    if not isinstance(value, str):
        return MASK if secret else value
    if secret and value:
        return MASK
    return redact_text(value)
