"""What must never be printed or recorded: API keys, tokens, and credentials in URLs.

    key_shaped("sk-proj-abc...")                     # True: shaped like an API key
    api_key_env_problem("sk-proj-abc...")            # (message, hint): a key where a variable name belongs
    url_without_credentials("https://u:p@host/v1")   # "https://host/v1"
    without_secrets({"api_key": "x", "timeout": 9})  # {"timeout": 9}: what run.json, refine.json, metrics.json keep

The one home of these rules: run configs (persona.config), the openai backend's redaction of its errors, eval's
and refine's records and the CLI's messages all use them.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

# What an API key or token looks like, as opposed to a name like OPENAI_API_KEY: a known key prefix followed
# by 16+ key characters (sk-proj-..., sk_live_..., hf_..., gsk_..., ghp_..., xai-..., nvapi-..., AIza...),
# or a run of 24+ letters and digits that mixes letters with digits or lower with upper case (hex, base62).
KEY_PREFIX = re.compile(r"(?:sk|pk|rk|hf|gsk|ghp|gho|ghs|ghu|github_pat|xai|nvapi)[-_]|AIza")
KEY_SHAPED = re.compile(
    r"(?<![A-Za-z0-9])(?:" + KEY_PREFIX.pattern + r")[A-Za-z0-9_\-]{16,}"
    r"|(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[0-9])(?=[A-Za-z0-9]*[A-Za-z])[A-Za-z0-9]{24,}"
    r"|(?<![A-Za-z0-9])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*[A-Z])[A-Za-z0-9]{24,}")
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# backend options whose name says they hold a secret (api_key_env holds a name, not a secret)
SECRET_OPTION = re.compile(r"(?i)(?:^|_)(?:api_?key|key|token|secret|password|passwd|pwd|auth|authorization"
                           r"|credentials?|cookie|bearer)s?(?:$|_)")


def key_shaped(text: str) -> bool:
    """True when `text` contains something shaped like an API key or token."""
    return bool(KEY_SHAPED.search(text))


def api_key_env_problem(value) -> tuple[str, str] | None:
    """(message, hint) when `value` is not the name of an environment variable, else None. The message
    follows the field's name ("api_key_env looks like ...") and never shows the value: it may be the key."""
    hint = ("put the key in an environment variable (export OPENAI_API_KEY=your-key) and pass the variable's "
            "name: --api-key-env OPENAI_API_KEY, or api_key_env: OPENAI_API_KEY in a run config")
    if not isinstance(value, str) or not ENV_NAME.fullmatch(value):
        return ("must be the name of an environment variable (letters, digits and '_'); "
                "the value given is not one (not shown, in case it is a key)", hint)
    if key_shaped(value) or KEY_PREFIX.match(value):  # a value that starts like a key is one, however short
        return ("looks like an API key, not the name of an environment variable (the value is not shown)",
                hint + "; a key typed on a command line (shell history) or saved in a file may have leaked: "
                       "consider revoking it")
    return None


def url_without_credentials(url: str) -> str:
    """'https://user:pass@host:8000/v1' -> 'https://host:8000/v1'."""
    parts = urlsplit(str(url))
    if "@" not in parts.netloc:
        return str(url)
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def url_credentials(url: str | None) -> list[str]:
    """The user, password and user:password of a URL (raw and %-decoded), for redaction."""
    from urllib.parse import unquote

    parts = urlsplit(str(url or ""))
    if "@" not in parts.netloc:
        return []
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo, *userinfo.split(":", 1)]
    return [s for s in dict.fromkeys(found + [unquote(s) for s in found]) if s]


def without_secrets(options: dict) -> dict:
    """`options` without the ones that hold a secret (by name or by shape) and without user:password@ in URLs."""
    kept = {}
    for name, value in options.items():
        if SECRET_OPTION.search(name) and not name.endswith("_env"):
            continue
        if isinstance(value, str):
            if key_shaped(value):
                continue
            value = url_without_credentials(value) if "://" in value else value
        elif isinstance(value, dict):
            value = without_secrets(value)
        kept[name] = value
    return kept
