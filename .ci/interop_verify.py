#!/usr/bin/env python3
"""Verifies a running jwks-server with third-party Python clients (PyJWT's
PyJWKClient, requests), the way a resource server in production would.

Run by .ci/interop.sh inside .venv-interop, which passes the gRPC answers it
got from grpcurl as files (grpcurl's JSON output). Standalone use:

    python .ci/interop_verify.py --base-url http://127.0.0.1:8080 \
        [--grpc-jwks FILE] [--grpc-token FILE] [--grpc-aud-token FILE] \
        [--grpc-expired-token FILE]

Prints one `ok - ...` or `FAIL - ...` line per check and, unless
--no-summary, a closing `N passed, M failed` line. Exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import sys
import time
from typing import Any, Callable

import jwt
import requests
from jwt import PyJWKClient
from jwt.exceptions import (
    InvalidAudienceError,
    InvalidSignatureError,
    PyJWKClientError,
)

HTTP_TIMEOUT = 10
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
PUBLIC_MEMBERS = {"kty", "use", "alg", "kid", "n", "e"}
REQUIRED_CLAIMS = ["iss", "sub", "iat", "nbf", "exp", "jti"]


class CheckFailed(Exception):
    pass


def expect(condition: Any, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def b64url_decode(text: str) -> bytes:
    expect("=" not in text, f"base64url value has padding: {text[:16]}...")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# The members RFC 7638 hashes, by key type (RFC 7638 3.2, RFC 8037 2).
THUMBPRINT_MEMBERS = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
# kty and crv of each algorithm's keys.
ALGORITHM_KEYS = {"RS256": ("RSA", None), "PS256": ("RSA", None), "ES256": ("EC", "P-256"), "EdDSA": ("OKP", "Ed25519")}


def rfc7638_thumbprint(jwk: dict) -> str:
    members = THUMBPRINT_MEMBERS[jwk["kty"]]
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64url_encode(hashlib.sha256(canonical.encode()).digest())


def grpc_answer(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


class Runner:
    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, fn: Callable[[], str | None]) -> Any:
        """Runs one check; `fn` raises on failure and may return a detail."""
        try:
            detail = fn()
        except Exception as exc:  # a check's failure, whatever raised it
            self.failed += 1
            print(f"FAIL - {name}: {type(exc).__name__}: {exc}", flush=True)
            return False
        self.passed += 1
        print(f"ok - {name}" + (f" ({detail})" if detail else ""), flush=True)
        return True


def check_algorithms(base: str, tokens_file: str) -> Runner:
    """PyJWT verifies a token of each algorithm from each door against the
    JWKS, and rejects the expired one of each (its kid is not published)."""
    r = Runner()
    tokens: dict[str, dict[str, str]] = grpc_answer(tokens_file)
    jwks_url = f"{base}/.well-known/jwks.json"
    state: dict[str, Any] = {}

    def fetch() -> str:
        resp = requests.get(jwks_url, timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}")
        state["keys"] = resp.json()["keys"]
        algs = sorted({k["alg"] for k in state["keys"]})
        expect(algs == sorted(tokens), f"JWKS algorithms {algs} != {sorted(tokens)}")
        return f"{len(state['keys'])} key(s): {', '.join(algs)}"

    r.run("requests: the JWKS of a server running every algorithm has keys of each", fetch)
    keys: list[dict] = state.get("keys", [])

    def members() -> str:
        expect(keys, "no keys to check")
        for key in keys:
            kty, crv = ALGORITHM_KEYS[key["alg"]]
            expect(key["kty"] == kty and key.get("crv") == crv, f"kid {key['kid']}: {key}")
            allowed = {"kty", "use", "alg", "kid", *THUMBPRINT_MEMBERS[kty]}
            expect(set(key) == allowed, f"kid {key['kid']} has members {sorted(key)}")
            expect(key["kid"] == rfc7638_thumbprint(key), f"kid {key['kid']} is not its RFC 7638 thumbprint")
        return None

    r.run("every JWK has exactly its type's public members and its RFC 7638 thumbprint as kid", members)
    client = PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300, timeout=HTTP_TIMEOUT)
    published = {k["kid"] for k in keys}
    for alg, by_door in tokens.items():
        for door in ("rest", "grpc"):

            def valid(token: str = by_door[door], alg: str = alg) -> str:
                header = jwt.get_unverified_header(token)
                expect(header.get("alg") == alg and header.get("typ") == "JWT", f"header {header}")
                if alg == "ES256":
                    sig = b64url_decode(token.rsplit(".", 1)[1])
                    expect(len(sig) == 64, f"ES256 signature is {len(sig)} bytes, not R||S (64)")
                key = client.get_signing_key_from_jwt(token)
                claims = jwt.decode(token, key.key, algorithms=[alg], options={"require": REQUIRED_CLAIMS})
                return f"kid {header['kid']}, sub {claims['sub']}"

            r.run(f"PyJWT: {alg} token from {door} verifies against the JWKS", valid)

            def expired(token: str = by_door[f"{door}_expired"], alg: str = alg) -> str:
                header = jwt.get_unverified_header(token)
                claims = jwt.decode(token, options={"verify_signature": False})
                expect(header.get("alg") == alg, f"header {header}")
                expect(header.get("kid") not in published, f"its kid {header.get('kid')} IS in the JWKS")
                expect(claims["exp"] < int(time.time()), f"exp {claims['exp']} is not in the past")
                try:
                    client.get_signing_key_from_jwt(token)
                except PyJWKClientError:
                    return f"kid {header['kid']} absent from the JWKS -> PyJWKClientError"
                raise CheckFailed("PyJWKClient found a signing key for it")

            r.run(f"PyJWT: the expired {alg} token from {door} is REJECTED", expired)
    return r


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="http://HOST:PORT of the REST API")
    parser.add_argument("--grpc-jwks", help="grpcurl output of KeyService/GetJwks")
    parser.add_argument("--grpc-token", help="grpcurl output of IssueToken {}")
    parser.add_argument(
        "--grpc-aud-token",
        help='grpcurl output of IssueToken {"subject":"alice","audience":["svc"],"lifetimeSeconds":60}',
    )
    parser.add_argument("--grpc-expired-token", help='grpcurl output of IssueToken {"expired":true}')
    parser.add_argument(
        "--algorithm-tokens",
        help="JSON {ALG: {rest, rest_expired, grpc, grpc_expired}} from a server running every "
        "algorithm: check only those (each verifies, each expired one is rejected)",
    )
    parser.add_argument("--no-summary", action="store_true", help="omit the closing summary line")
    args = parser.parse_args()
    if args.algorithm_tokens:
        r = check_algorithms(args.base_url.rstrip("/"), args.algorithm_tokens)
        if not args.no_summary:
            print(f"{r.passed} passed, {r.failed} failed")
        return 1 if r.failed else 0

    base = args.base_url.rstrip("/")
    jwks_url = f"{base}/.well-known/jwks.json"
    r = Runner()
    state: dict[str, Any] = {"jtis": []}
    http = requests.Session()

    # ---- discovery ----------------------------------------------------
    def connect() -> str:
        resp = http.get(f"{base}/connect", timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}")
        body = resp.json()
        expect(body.get("endpoints", {}).get("jwks") == "/.well-known/jwks.json", f"endpoints: {body}")
        state["issuer"] = body["issuer"]
        return f"issuer {body['issuer']}"

    r.run("requests: GET /connect names the JWKS endpoint and the issuer", connect)
    issuer = state.get("issuer")

    # ---- the JWKS as published ----------------------------------------
    def fetch_jwks() -> str:
        resp = http.get(jwks_url, timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}")
        ctype = resp.headers.get("Content-Type", "")
        expect(ctype.split(";")[0].strip() in ("application/json", "application/jwk-set+json"), f"Content-Type {ctype!r}")
        expect("max-age=" in resp.headers.get("Cache-Control", ""), f"Cache-Control {resp.headers.get('Cache-Control')!r}")
        body = resp.json()
        expect(isinstance(body.get("keys"), list) and body["keys"], f"no keys: {body}")
        state["jwks"] = body
        state["etag"] = resp.headers.get("ETag")
        return f"{len(body['keys'])} key(s), ETag {state['etag']}"

    r.run("requests: GET /.well-known/jwks.json answers a non-empty key set", fetch_jwks)
    keys: list[dict] = state.get("jwks", {}).get("keys", [])
    kids = [k.get("kid") for k in keys]

    def no_private_members() -> str:
        expect(keys, "no keys to check")
        for key in keys:
            found = [m for m in PRIVATE_MEMBERS if m in key]
            expect(not found, f"kid {key.get('kid')} has private members {found}")
            extra = set(key) - PUBLIC_MEMBERS
            expect(not extra, f"kid {key.get('kid')} has unexpected members {sorted(extra)}")
        return None

    r.run("JWKS has no private members (d, p, q, dp, dq, qi)", no_private_members)

    def modulus_2048() -> str:
        expect(keys, "no keys to check")
        for key in keys:
            raw = b64url_decode(key["n"])
            bits = int.from_bytes(raw, "big").bit_length()
            expect(len(raw) == 256 and bits == 2048, f"kid {key['kid']}: n is {len(raw)} bytes, {bits} bits")
        return "n is 256 bytes, 2048 bits, base64url without padding"

    r.run("every JWKS n decodes to exactly 2048 bits", modulus_2048)

    def key_parameters() -> str:
        expect(keys, "no keys to check")
        for key in keys:
            got = (key.get("kty"), key.get("use"), key.get("alg"), key.get("e"))
            expect(got == ("RSA", "sig", "RS256", "AQAB"), f"kid {key.get('kid')}: kty/use/alg/e = {got}")
            b64url_decode(key["e"])
        expect(len(set(kids)) == len(kids), f"duplicate kids {kids}")
        return None

    r.run("every JWK is kty=RSA, use=sig, alg=RS256, e=AQAB with a unique kid", key_parameters)

    def thumbprints() -> str:
        expect(keys, "no keys to check")
        for key in keys:
            want = rfc7638_thumbprint(key)
            expect(key["kid"] == want, f"kid {key['kid']} != RFC 7638 thumbprint {want}")
        return None

    r.run("every kid is the RFC 7638 SHA-256 thumbprint of its key", thumbprints)

    client = PyJWKClient(jwks_url, cache_jwk_set=True, lifespan=300, timeout=HTTP_TIMEOUT)

    def pyjwk_parses() -> str:
        jwk_set = client.get_jwk_set(refresh=True)
        got = [k.key_id for k in jwk_set.keys]
        expect(got == kids, f"PyJWKSet kids {got} != {kids}")
        return f"kids {', '.join(got)}"

    r.run("PyJWKClient fetches and parses every key in the JWKS", pyjwk_parses)

    # ---- gRPC GetJwks agrees with REST -------------------------------
    if args.grpc_jwks:

        def grpc_same_keys() -> str:
            answer = grpc_answer(args.grpc_jwks)
            grpc_keys = answer.get("keys", [])
            grpc_kids = [k.get("kid") for k in grpc_keys]
            expect(grpc_kids == kids, f"gRPC kids {grpc_kids} != REST kids {kids}")
            for g, k in zip(grpc_keys, keys):
                expect(
                    all(g.get(m) == k.get(m) for m in PUBLIC_MEMBERS),
                    f"kid {k['kid']}: gRPC key differs from REST key",
                )
            expect(answer.get("etag") == state.get("etag"), f"gRPC etag {answer.get('etag')!r} != REST ETag {state.get('etag')!r}")
            return f"{len(grpc_kids)} key(s), same order, same n/e, same etag"

        r.run("gRPC GetJwks returns the same keys as the REST JWKS", grpc_same_keys)

    # ---- tokens from POST /auth ----------------------------------------
    def verify(token: str, audience: str | None = None) -> tuple[dict, dict]:
        header = jwt.get_unverified_header(token)
        expect(header.get("alg") == "RS256", f"header alg {header.get('alg')}")
        expect(header.get("typ") == "JWT", f"header typ {header.get('typ')}")
        expect(header.get("kid") in kids, f"header kid {header.get('kid')} not in JWKS {kids}")
        signing_key = client.get_signing_key_from_jwt(token)
        claims = jwt.decode(
            token,
            signing_key.key,
            algorithms=["RS256"],
            issuer=issuer,
            audience=audience,
            options={"require": REQUIRED_CLAIMS + (["aud"] if audience else []), "verify_aud": audience is not None},
        )
        expect(claims["nbf"] <= claims["iat"] + 1 and claims["iat"] < claims["exp"], f"iat/nbf/exp {claims}")
        state["jtis"].append(claims["jti"])
        return header, claims

    def auth_plain() -> str:
        resp = http.post(f"{base}/auth", timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
        expect(resp.headers.get("Content-Type", "").startswith("text/plain"), f"Content-Type {resp.headers.get('Content-Type')!r}")
        token = resp.text.strip()
        header, claims = verify(token)
        state["auth_token"] = token
        return f"kid {header['kid']}, sub {claims['sub']}, exp in {claims['exp'] - int(time.time())}s"

    r.run("PyJWT: POST /auth token verifies against the JWKS (RS256; iss, sub, iat, nbf, exp, jti present)", auth_plain)

    def auth_json() -> str:
        resp = http.post(f"{base}/auth", headers={"Accept": "application/json"}, timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
        body = resp.json()
        expect(body.get("token_type") == "Bearer", f"token_type {body.get('token_type')!r}")
        header, claims = verify(body["token"])
        expect(body.get("kid") == header["kid"], f"kid {body.get('kid')} != header kid {header['kid']}")
        lifetime = claims["exp"] - claims["iat"]
        expect(abs(body.get("expires_in", -1) - lifetime) <= 1, f"expires_in {body.get('expires_in')} vs exp-iat {lifetime}")
        return f"expires_in {body['expires_in']}"

    r.run("PyJWT: POST /auth with Accept: application/json gives {token, token_type, expires_in, kid}", auth_json)

    def auth_json_body() -> str:
        resp = http.post(
            f"{base}/auth",
            json={"username": "bob", "password": "secret", "audience": "api"},
            timeout=HTTP_TIMEOUT,
        )
        expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
        _, claims = verify(resp.text.strip(), audience="api")
        expect(claims["sub"] == "bob", f"sub {claims['sub']!r}")
        return "sub bob, aud api"

    r.run("PyJWT: POST /auth with a JSON body: username becomes sub, audience is checked", auth_json_body)

    def auth_basic() -> str:
        resp = http.post(f"{base}/auth", auth=("carol", "secret"), timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
        _, claims = verify(resp.text.strip())
        expect(claims["sub"] == "carol", f"sub {claims['sub']!r}")
        return "sub carol"

    r.run("PyJWT: POST /auth with HTTP Basic credentials: the username becomes sub", auth_basic)

    def tampered() -> str:
        token = state["auth_token"]
        head, payload, sig = token.split(".")
        claims = json.loads(b64url_decode(payload))
        claims["sub"] = "mallory"
        forged = ".".join([head, b64url_encode(json.dumps(claims).encode()), sig])
        try:
            jwt.decode(forged, client.get_signing_key_from_jwt(forged).key, algorithms=["RS256"], issuer=issuer)
        except InvalidSignatureError:
            return "InvalidSignatureError"
        raise CheckFailed("a token with a modified payload verified")

    r.run("PyJWT: a /auth token with a modified payload is rejected", tampered)

    # ---- the expired token ----------------------------------------------
    def check_expired(token: str, source: str) -> str:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
        now = int(time.time())
        expect(header.get("alg") == "RS256" and header.get("kid"), f"header {header}")
        expect(header["kid"] not in kids, f"its kid {header['kid']} IS in the JWKS")
        expect(claims.get("exp", now + 1) < now, f"exp {claims.get('exp')} is not in the past (now {now})")
        try:
            client.get_signing_key_from_jwt(token)
        except PyJWKClientError:
            pass
        else:
            raise CheckFailed("PyJWKClient found a signing key for it")
        try:
            jwt.decode(token, client.get_jwk_set().keys[0].key, algorithms=["RS256"], issuer=issuer)
        except (InvalidSignatureError, jwt.ExpiredSignatureError):
            pass
        else:
            raise CheckFailed("it verified with a published key")
        return f"kid {header['kid']} absent from the JWKS -> PyJWKClientError; exp {now - claims['exp']}s in the past"

    def auth_expired() -> str:
        resp = http.post(f"{base}/auth", params={"expired": "true"}, timeout=HTTP_TIMEOUT)
        expect(resp.status_code == 200, f"status {resp.status_code}: {resp.text[:200]}")
        return check_expired(resp.text.strip(), "/auth?expired=true")

    r.run("PyJWT: POST /auth?expired=true token is REJECTED", auth_expired)

    # ---- tokens from gRPC IssueToken -------------------------------------
    def grpc_common(answer: dict, claims: dict, header: dict) -> None:
        expect(answer.get("tokenType") == "Bearer", f"tokenType {answer.get('tokenType')!r}")
        expect(answer.get("kid") == header["kid"], f"kid {answer.get('kid')} != header kid {header['kid']}")
        expect(int(answer.get("issuedAt", 0)) == claims["iat"], f"issuedAt {answer.get('issuedAt')} != iat {claims['iat']}")
        expect(int(answer.get("expiresAt", 0)) == claims["exp"], f"expiresAt {answer.get('expiresAt')} != exp {claims['exp']}")

    if args.grpc_token:

        def grpc_default() -> str:
            answer = grpc_answer(args.grpc_token)
            header, claims = verify(answer["token"])
            grpc_common(answer, claims, header)
            expect(claims["sub"] == "anonymous", f"sub {claims['sub']!r}")
            expect("aud" not in claims, f"unexpected aud {claims.get('aud')!r}")
            return f"sub anonymous, lifetime {claims['exp'] - claims['iat']}s"

        r.run("PyJWT: gRPC IssueToken {} token verifies against the REST JWKS", grpc_default)

    if args.grpc_aud_token:

        def grpc_audience() -> str:
            answer = grpc_answer(args.grpc_aud_token)
            header, claims = verify(answer["token"], audience="svc")
            grpc_common(answer, claims, header)
            expect(claims["sub"] == "alice", f"sub {claims['sub']!r}")
            expect(claims["exp"] - claims["iat"] == 60, f"lifetime {claims['exp'] - claims['iat']}")
            return "sub alice, aud svc, lifetime 60s"

        r.run("PyJWT: gRPC IssueToken {subject, audience, lifetimeSeconds} token verifies with audience=svc", grpc_audience)

        def grpc_wrong_audience() -> str:
            token = grpc_answer(args.grpc_aud_token)["token"]
            try:
                jwt.decode(token, client.get_signing_key_from_jwt(token).key, algorithms=["RS256"], audience="other")
            except InvalidAudienceError:
                return "InvalidAudienceError"
            raise CheckFailed("verified with audience=other")

        r.run("PyJWT: the same token is rejected for another audience", grpc_wrong_audience)

    if args.grpc_expired_token:

        def grpc_expired() -> str:
            answer = grpc_answer(args.grpc_expired_token)
            detail = check_expired(answer["token"], "gRPC")
            expect(int(answer.get("expiresIn", 0)) < 0, f"expiresIn {answer.get('expiresIn')} is not negative")
            expect(answer.get("kid") == jwt.get_unverified_header(answer["token"])["kid"], "kid differs from the header's")
            return detail

        r.run("PyJWT: gRPC IssueToken {expired: true} token is REJECTED", grpc_expired)

    def unique_jtis() -> str:
        jtis = state["jtis"]
        expect(len(jtis) >= 2, f"only {len(jtis)} token(s) verified")
        expect(len(set(jtis)) == len(jtis), f"repeated jti among {jtis}")
        return f"{len(jtis)} tokens"

    r.run("every verified token has a distinct jti", unique_jtis)

    if not args.no_summary:
        print(f"{r.passed} passed, {r.failed} failed")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
