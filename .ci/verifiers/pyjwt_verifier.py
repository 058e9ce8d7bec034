#!/usr/bin/env python3
"""A protected endpoint that verifies bearer tokens with PyJWT, correctly or
misconfigured the way real incidents came from, for `jwks-server probe`.

    python pyjwt_verifier.py --port P --jwks URL --issuer ISS --audience AUD \
        --mode MODE [--access-tokens]

`GET /protected` with `Authorization: Bearer TOKEN` answers 200 when the
token is accepted and 401 when it is refused. Modes:

  correct              PyJWKClient finds the key by kid; decode pins the
                       key's algorithm, requires exp, iss and aud.
  no-signature-check   options={"verify_signature": False}, with every claim
                       check turned back on (PyJWT turns them off with it).
  hs256-public-key     takes alg from the header and, for HS256, uses the RSA
                       public key's PEM as the HMAC secret. PyJWT refuses a
                       PEM public key as an HMAC secret (InvalidKeyError), so
                       this mistake cannot be made with it: nothing gets through.
  no-audience-check    verify_aud off.
  no-exp-required      exp checked only when present.
  no-time-check        exp required but, like nbf and iat, never compared to
                       the clock (verify_exp, verify_nbf, verify_iat off).

With --access-tokens the header's `typ` must be `at+jwt` (RFC 9068 §4;
PyJWT does not check typ). Run by .ci/interop.sh inside .venv-interop.
"""

from __future__ import annotations

import argparse
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
from cryptography.hazmat.primitives import serialization

MODES = [
    "correct",
    "no-signature-check",
    "hs256-public-key",
    "no-audience-check",
    "no-exp-required",
    "no-time-check",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--jwks", required=True)
    parser.add_argument("--issuer", required=True)
    parser.add_argument("--audience", required=True)
    parser.add_argument("--mode", choices=MODES, required=True)
    parser.add_argument("--access-tokens", action="store_true")
    args = parser.parse_args()
    # No cache: a key published a moment ago is found at once.
    jwks = jwt.PyJWKClient(args.jwks, cache_jwk_set=False, cache_keys=False, timeout=10)

    def claim_options(mode: str) -> tuple[dict, dict]:
        required = ["iss"]
        options: dict = {"verify_exp": True, "verify_nbf": True, "verify_iss": True}
        kwargs: dict = {"issuer": args.issuer, "leeway": 5}
        if mode == "no-audience-check":
            options["verify_aud"] = False
        else:
            options["verify_aud"] = True
            kwargs["audience"] = args.audience
            required.append("aud")
        if mode != "no-exp-required":
            required.append("exp")
        if mode == "no-time-check":
            options.update(verify_exp=False, verify_nbf=False, verify_iat=False)
        options["require"] = required
        return options, kwargs

    def verify(token: str) -> None:
        header = jwt.get_unverified_header(token)
        if args.access_tokens and str(header.get("typ", "")).lower() not in ("at+jwt", "application/at+jwt"):
            raise jwt.InvalidTokenError("typ is not at+jwt")
        options, kwargs = claim_options(args.mode)
        if args.mode == "no-signature-check":
            jwt.decode(token, options={"verify_signature": False, **options}, **kwargs)
            return
        if args.mode == "hs256-public-key" and header.get("alg") == "HS256":
            for key in jwks.get_signing_keys():
                if key.key_type != "RSA":
                    continue
                pem = key.key.public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                try:
                    jwt.decode(token, pem, algorithms=["HS256"], options=options, **kwargs)
                    return
                except jwt.InvalidKeyError:
                    raise
                except jwt.PyJWTError:
                    continue
            raise jwt.InvalidTokenError("no RSA key's PEM verifies it")
        key = jwks.get_signing_key_from_jwt(token)
        jwt.decode(token, key, options=options, **kwargs)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            auth = self.headers.get("Authorization", "")
            status = 401
            if self.path == "/protected" and auth.startswith("Bearer "):
                try:
                    verify(auth[len("Bearer "):])
                    status = 200
                except (jwt.PyJWTError, ValueError, KeyError, TypeError):
                    status = 401
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"pyjwt {jwt.__version__} verifier ({args.mode}) on port {args.port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
