"""Sign a bundle: an ed25519 signature over its manifest.json (which holds the sha256 of every file) into
manifest.sig, so that `torchport serve --trusted-keys` and Predictor(..., trusted_keys=) can refuse any
bundle that a trusted key did not sign. Every file is checked against the manifest before signing. A
signature covers one manifest: `torchport verify` writes nothing into a signed bundle (`--key KEY` records
its results and signs again), and a re-export writes a new, unsigned bundle, saying so.

examples:
  torchport sign --new-key keys/release.pem          # writes keys/release.pem (private) and keys/release.pem.pub
  torchport sign bundles/seed --key keys/release.pem
  torchport serve bundles/seed --trusted-keys keys/release.pem.pub
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cryptography  # noqa: F401  (imported first so that a missing 'sign' extra is reported as such)

from torchport.runtime.errors import InputError
from torchport.runtime.signing import SIGNATURE_FILE, key_id, load_private_key, new_key, sign_bundle


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", type=Path, nargs="?", help="the bundle directory to sign")
    p.add_argument("--key", type=Path, help="the ed25519 private key (PEM) to sign with")
    p.add_argument("--new-key", type=Path, metavar="PATH",
                   help="make a new key pair instead: PATH (private, mode 0600) and PATH.pub (public)")


def run(args: argparse.Namespace) -> int:
    if args.new_key is not None:
        if args.bundle is not None or args.key is not None:
            raise InputError("new_key makes a key pair and signs nothing; sign in a second call", parameter="new_key")
        private, public = new_key(args.new_key)
        print(f"wrote {private} (private: keep it secret) and {public} (public: give it to servers as a "
              "trusted key)")
        return 0
    if args.bundle is None or args.key is None:
        raise InputError("give the bundle to sign and the private key to sign it with", parameter="key")
    key = load_private_key(args.key)
    sign_bundle(args.bundle, key)
    print(f"signed {args.bundle} with key {key_id(key.public_key())} ({args.bundle / SIGNATURE_FILE})",
          file=sys.stderr)
    return 0
