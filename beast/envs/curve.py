"""CURVE keys for env servers on other hosts: the files, and which addresses need them.

A served host and each trainer hold a keypair (Z85, the CZMQ/zcert layout the C++ server reads: lines
`public-key = "..."` and `secret-key = "..."`, the secret file mode 0600). A trainer knows its servers by their
public keys (`--curve-server-key`); a server serves only the trainers whose public keys are in its allow-list
(`--curve-allowed-clients-file`: the "ironhouse" pattern, checked by the server's ZAP handler), so a stolen
server key alone drives no games.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

import zmq

_KEY_LINE = re.compile(r'(public|secret)-key\s*=\s*"([^"]{40})"')


def is_loopback_or_local(address: str) -> bool:
    """ipc:// and inproc:// addresses, and tcp:// ones on a loopback interface: reachable from this host only."""
    if address.startswith(("ipc://", "inproc://")):
        return True
    if not address.startswith("tcp://"):
        return False
    host = address[len("tcp://") :].rsplit(":", 1)[0].strip("[]")
    if host in ("localhost", "lo"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_public_key(text: str) -> str:
    """The Z85 public key in `text`: the bare 40-character key or a `public-key = "..."` line. ValueError if none."""
    key = dict(_KEY_LINE.findall(text)).get("public", text.strip())
    if len(key) != 40 or any(c.isspace() for c in key):
        raise ValueError("no 40-character Z85 CURVE public key")
    return key


def allow_list_keys(text: str) -> list[str]:
    """The client public keys of an allow-list, as the server reads it: one per line, bare or `public-key = "..."`;
    lines starting with `#` are comments (Z85 has `#`, but as its last digit, 84: the first of a 32-byte key's
    40 digits is at most 82, so no key begins with it). ValueError naming the first line that is neither."""
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        try:
            keys.append(parse_public_key(stripped))
        except ValueError:
            raise ValueError(f"line {number} is not a 40-character Z85 public key") from None
    return keys


def read_curve_public_key(path: str | os.PathLike[str]) -> str:
    """The public key of a public-key file (or of a keypair file)."""
    try:
        return parse_public_key(Path(path).read_text())
    except ValueError:
        raise ValueError(f"{path} holds no 40-character Z85 CURVE public key.") from None


def read_curve_keypair(path: str | os.PathLike[str]) -> tuple[str, str]:
    """(public, secret) from a keypair file; the public key is derived from the secret one and must agree."""
    found = dict(_KEY_LINE.findall(Path(path).read_text()))
    if "secret" not in found:
        raise ValueError(f'{path} needs a line secret-key = "<40 Z85 chars>".')
    public = zmq.curve_public(found["secret"].encode()).decode()
    if found.get("public", public) != public:
        raise ValueError(f"the public key in {path} does not belong to its secret key.")
    return public, found["secret"]


def write_curve_keypair(secret_file: str | os.PathLike[str], public_file: str | os.PathLike[str]) -> str:
    """A new keypair: the secret file (mode 0600) for its owner, the public file for the other side. Returns the
    public key (Z85)."""
    public, secret = (k.decode() for k in zmq.curve_keypair())
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f'# beast CURVE keypair (Z85); keep secret\npublic-key = "{public}"\n')
        f.write(f'secret-key = "{secret}"\n')
    Path(public_file).write_text(f'# beast CURVE public key (Z85)\npublic-key = "{public}"\n')
    return public


def ensure_curve_keypair(secret_file: str | os.PathLike[str]) -> tuple[str, str, bool]:
    """(public, secret, created): the keypair in `secret_file`, written first (with `secret_file.pub` beside it)
    when the file does not exist yet."""
    path = Path(secret_file).expanduser()
    created = not path.exists()
    if created:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_curve_keypair(path, path.with_name(path.name + ".pub"))
    public, secret = read_curve_keypair(path)
    return public, secret, created
