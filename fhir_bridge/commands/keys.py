"""``fhir-bridge keys generate``: a key pair (PEM) and its JWKS for SMART Backend Services."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click


@click.group("keys")
def keys() -> None:
    """Key pairs for SMART Backend Services (clients of the bridge, the bridge at partners)."""


@keys.command("generate")
@click.argument("name")
@click.option("--alg", type=click.Choice(["RS384", "ES384"]), default="RS384", show_default=True)
@click.option("--kid", default=None, help="Key id (default: the key's RFC 7638 thumbprint).")
@click.option(
    "--out-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Where NAME.pem and NAME.jwks.json are written.",
)
@click.option("--force", is_flag=True, help="Overwrite existing files.")
def generate(name: str, alg: str, kid: str | None, out_dir: Path, force: bool) -> None:
    """Write NAME.pem (the private key, mode 600) and NAME.jwks.json (the public JWKS).

    \b
    A client of the bridge:  fhir-bridge clients add ID ... --jwks-file NAME.jwks.json
                             (the client signs its assertions with NAME.pem)
    The bridge at a partner: fhir-bridge partners add KEY ... --auth smart --key-file NAME.pem
                             --alg ALG --kid KID (give the partner NAME.jwks.json)
    """
    from fhir_bridge.security.keys import generate_key_pair

    if not name or "/" in name or name.startswith("."):
        raise click.BadParameter("a plain file name, without '/'", param_hint="NAME")
    pem_path, jwks_path = out_dir / f"{name}.pem", out_dir / f"{name}.jwks.json"
    existing = [str(p) for p in (pem_path, jwks_path) if p.exists()]
    if existing and not force:
        raise click.ClickException(f"{', '.join(existing)} exists; --force overwrites")
    pair = generate_key_pair(alg, kid)
    out_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(pem_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pair.private_pem)
    os.chmod(pem_path, 0o600)  # also when --force replaced a file with wider permissions
    jwks_path.write_text(json.dumps(pair.jwks, indent=2) + "\n")
    click.echo(f"private key  {pem_path}  (keep it secret)")
    click.echo(f"public JWKS  {jwks_path}")
    click.echo(f"alg {alg}  kid {pair.kid}")
