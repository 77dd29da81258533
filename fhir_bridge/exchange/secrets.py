"""Read the secret a partner's auth settings point at, without ever echoing it.

A partner's ``auth`` settings name where a secret lives, never the secret itself:
``{"token_env": "NAME"}`` / ``{"key_env": "NAME"}`` (an environment variable) or
``{"token_file": "/path"}`` / ``{"key_file": "/path"}`` (a file). Errors name the variable or
file, never the value, and are raised ``from None`` so no chained exception carries file bytes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

SecretKind = Literal["token", "key"]


class AuthConfigError(ValueError):
    """A partner's auth settings are unusable (missing or wrong fields, bad key, bad algorithm)."""


class SecretUnavailable(AuthConfigError):
    """The secret named by the auth settings is missing, empty or unreadable."""


def secret_source(auth: Mapping[str, Any], kind: SecretKind) -> str:
    """Describe where the ``kind`` secret lives ("environment variable X" / "file Y").

    :raise AuthConfigError: if the settings name no source, or both an env var and a file.
    """
    env_key, file_key = f"{kind}_env", f"{kind}_file"
    has_env, has_file = auth.get(env_key) is not None, auth.get(file_key) is not None
    if has_env == has_file:
        raise AuthConfigError(f"auth settings need exactly one of {env_key} or {file_key}")
    key = env_key if has_env else file_key
    name = auth[key]
    if not isinstance(name, str) or not name.strip():
        raise AuthConfigError(f"auth setting {key} must be a non-empty string")
    return f"environment variable {name}" if has_env else f"file {name}"


def read_secret(auth: Mapping[str, Any], kind: SecretKind) -> str:
    """The ``kind`` secret (surrounding whitespace stripped) from its env var or file.

    :raise AuthConfigError: if the settings do not name exactly one source.
    :raise SecretUnavailable: if the variable is unset or empty, or the file is unreadable,
        not UTF-8, or empty. The message names the source, never the value.
    """
    source = secret_source(auth, kind)
    env_name = auth.get(f"{kind}_env")
    if env_name is not None:
        value = os.environ.get(env_name)
        if value is None:
            raise SecretUnavailable(f"{source} is not set")
    else:
        path = Path(auth[f"{kind}_file"])
        try:
            value = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise SecretUnavailable(f"{source} is not UTF-8 text") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SecretUnavailable(f"{source} cannot be read ({reason})") from None
    value = value.strip()
    if not value:
        raise SecretUnavailable(f"{source} is empty")
    return value
